"""Packed shared-prefix GRPO loss and gradients equal the unpacked per-sample computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwenlong_jax import models
from qwenlong_jax.parallel import sharding
from qwenlong_jax.parallel.sharding import MeshConfig
from qwenlong_jax.rl import grpo_step, packing

CFG = models.get_model_config(
    "tiny",
    vocab_size=128,
    hidden_size=64,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    intermediate_size=96,
    num_layers=2,
    logits_chunk=16,
)
G = 4


def _groups(seed=0, num_prompts=2):
    rng = np.random.default_rng(seed)
    prompts = [list(rng.integers(1, 128, size=n)) for n in (13, 7, 10, 5)[:num_prompts]]
    lens = [9, 3, 6, 1, 5, 8, 2, 7, 4, 4, 9, 1, 3, 6, 2, 5][: num_prompts * G]  # ragged
    responses = [list(rng.integers(1, 128, size=n)) for n in lens]
    return prompts, responses


def _batches(prompts, responses, agg):
    R = 9
    W_packed = packing.round_up(packing.packed_row_length(prompts, responses, G), 8)
    packed = packing.pack_groups(prompts, responses, G, W_packed, R)
    naive = packing.unpacked_rows(prompts, responses, G, max(map(len, prompts)) + R, R)
    rng = np.random.default_rng(1)
    adv = rng.normal(size=len(responses)).astype(np.float32)
    old = (rng.normal(size=(len(responses), R)) * 0.1 - 4.0).astype(np.float32)
    pb = jax.tree.map(lambda x: x[0, 0], grpo_step.grpo_batch(packed, adv, 1, 1, old))
    nb = jax.tree.map(lambda x: x[0, 0], grpo_step.grpo_batch(naive, adv, 1, 1, old))
    ls = grpo_step.LossSettings(clip_low=0.2, clip_high=0.28, agg=agg, entropy_coeff=0.01, temperature=0.7)
    return pb, nb, ls


def _loss_and_grad(params, mb, ls):
    def f(p):
        return grpo_step.grpo_loss(CFG, ls, p, mb)[0]

    return jax.jit(jax.value_and_grad(f))(params)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_packed_equals_unpacked(agg):
    params = models.init_params(CFG, jax.random.key(0), init_std=0.2)
    prompts, responses = _groups()
    pb, nb, ls = _batches(prompts, responses, agg)
    # Same per-token logprobs first (the strongest statement), then loss and gradients.
    lp_p = grpo_step.micro_logprobs(CFG, params, pb, ls)[0] * pb["mask_NR"]
    unpacked = dataclass_replace(ls, shared_prefix_segment=None)
    lp_n = grpo_step.micro_logprobs(CFG, params, nb, unpacked)[0] * nb["mask_NR"]
    np.testing.assert_allclose(lp_p, lp_n, rtol=1e-5, atol=1e-5)
    loss_p, g_p = _loss_and_grad(params, pb, ls)
    loss_n, g_n = _loss_and_grad(params, nb, dataclass_replace(ls, shared_prefix_segment=None))
    np.testing.assert_allclose(loss_p, loss_n, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_p), jax.tree.leaves(g_n)):
        scale = float(jnp.max(jnp.abs(b))) + 1e-12
        np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=1e-5)
    # The packed layout is smaller: the prompt appears once per group.
    assert pb["tokens_BW"].size < nb["tokens_BW"].size


def test_packed_equals_unpacked_on_8_devices():
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    params = models.init_params(CFG, jax.random.key(0), init_std=0.2)
    prompts, responses = _groups(num_prompts=4)
    pb, nb, ls = _batches(prompts, responses, "token-mean")
    loss_ref, g_ref = _loss_and_grad(params, nb, dataclass_replace(ls, shared_prefix_segment=None))
    p_shard = sharding.param_shardings(models.logical_axes(CFG), models.param_shapes(CFG), mesh)
    rows = sharding.named(mesh, "batch", None)
    b_shard = {k: (rows if k.endswith("_BW") or k.endswith("_NR") else sharding.named(mesh, "batch")) for k in pb}
    f = jax.jit(
        jax.value_and_grad(lambda p, mb: grpo_step.grpo_loss(CFG, ls, p, mb)[0]),
        in_shardings=(p_shard, b_shard),
        out_shardings=(sharding.replicated(mesh), p_shard),
    )
    with jax.set_mesh(mesh):
        loss, g = f(jax.device_put(params, p_shard), jax.device_put(pb, b_shard))
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        scale = float(jnp.max(jnp.abs(b))) + 1e-12
        np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=1e-5)


def test_first_response_token_is_scored_from_the_prompt_end():
    prompts, responses = [[5, 6, 7]], [[8, 9], [10]]
    rows = packing.pack_groups(prompts, responses, 2, 8, 2)
    assert rows.tokens_BW.tolist() == [[5, 6, 7, 8, 9, 10, 0, 0]]
    assert rows.segment_ids_BW.tolist() == [[1, 1, 1, 2, 2, 3, 0, 0]]
    assert rows.positions_BW.tolist() == [[0, 1, 2, 3, 4, 3, 0, 0]]
    assert rows.src_BW[0, 3:6].tolist() == [2, 3, 2]
    assert rows.unpack_idx_NR.tolist() == [[3, 4], [5, 0]]
    assert rows.mask_NR.tolist() == [[1, 1], [1, 0]]


def dataclass_replace(x, **kw):
    import dataclasses

    return dataclasses.replace(x, **kw)
