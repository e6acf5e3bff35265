"""Sampling on 8 fake devices (params over fsdp/tensor, prompts over data) equals one device."""

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from qwenlong_jax import models, sampling
from qwenlong_jax.parallel import sharding
from qwenlong_jax.parallel.sharding import MeshConfig

CFG = models.get_model_config("tiny", vocab_size=64, num_layers=2)  # N=4, K=2: tensor=2 divides
PARAMS = jax.jit(models.init_params, static_argnums=(0, 2))(CFG, jax.random.key(0), 0.2)
PROMPTS = [np.random.default_rng(3).integers(1, 64, size=n).tolist() for n in (30, 17, 25)]
MESH_CFG = MeshConfig(data=2, fsdp=2, tensor=2)


def test_sharded_generate_equals_single_device():
    assert len(jax.devices()) == 8
    kwargs = dict(max_new_tokens=10, temperature=1.0, top_k=20, num_samples=2, seed=3, prefill_chunk=16)
    ref = sampling.generate(CFG, PARAMS, PROMPTS, **kwargs)
    # 3 prompts on a batch axis of data*fsdp = 4: generate pads with a filler row.
    out = sampling.generate(CFG, PARAMS, PROMPTS, mesh=sharding.make_mesh(MESH_CFG), **kwargs)
    for i in range(len(PROMPTS)):
        for g in range(2):
            assert out[i][g].tokens == ref[i][g].tokens
            np.testing.assert_allclose(out[i][g].logprobs, ref[i][g].logprobs, atol=1e-5)
    assert ref[0][0].tokens != ref[0][1].tokens


def test_prompt_cache_is_sharded_over_batch_and_kv_heads():
    mesh = sharding.make_mesh(MESH_CFG)
    p_shard = sharding.param_shardings(models.logical_axes(CFG), models.param_shapes(CFG), mesh)
    tokens, lens = sampling.pad_prompts(PROMPTS + PROMPTS[:1], 32)
    batch = sharding.named(mesh, "batch", None)
    run = jax.jit(lambda p, t, n: sampling.prefill(CFG, p, t, n, chunk=16))
    with jax.set_mesh(mesh):
        cache = run(
            jax.device_put(PARAMS, p_shard),
            jax.device_put(tokens, batch),
            jax.device_put(lens, sharding.named(mesh, "batch")),
        )
    want = jax.sharding.NamedSharding(mesh, P(None, ("data", "fsdp"), None, "tensor", None))
    assert cache.k_LBSKH.sharding.is_equivalent_to(want, 5), cache.k_LBSKH.sharding
    # Each device holds a quarter of the prompts and half of the kv heads: 1/8 of the cache.
    shard = cache.k_LBSKH.addressable_shards[0].data
    assert shard.size * 8 == cache.k_LBSKH.size


def test_sequence_axis_takes_a_share_of_the_decode():
    """fsdp=2 x tensor=2 x sequence=2: prompts split over fsdp AND sequence (no two chips hold
    the same cache rows or compute the same token), same tokens as one device."""
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=2, tensor=2, sequence=2))
    prompts = PROMPTS + PROMPTS[:1]  # 4 prompts: one per (fsdp, sequence) pair
    kwargs = dict(max_new_tokens=8, temperature=1.0, top_k=20, num_samples=2, seed=5, prefill_chunk=16)
    ref = sampling.generate(CFG, PARAMS, prompts, **kwargs)
    out = sampling.generate(CFG, PARAMS, prompts, mesh=mesh, **kwargs)
    for i in range(len(prompts)):
        for g in range(2):
            assert out[i][g].tokens == ref[i][g].tokens
            # partial sums over fsdp (weight-stationary matmuls) add in another order
            np.testing.assert_allclose(out[i][g].logprobs, ref[i][g].logprobs, rtol=1e-5, atol=1e-5)
    # The sampler's own layout: the prompt cache of the compiled call is split 8 ways
    # (prompts over fsdp x sequence, kv heads over tensor).
    p_shard = sharding.param_shardings(models.logical_axes(CFG), models.param_shapes(CFG), mesh)
    tokens, lens = sampling.pad_prompts(prompts, 32)
    keys = sampling.sample_keys(0, np.arange(4), 2)
    with jax.set_mesh(mesh), sharding.rules(**sampling.decode.SAMPLER_RULES):
        cache = jax.jit(lambda p, t, n: sampling.prefill(CFG, p, t, n, chunk=16))(
            jax.device_put(PARAMS, p_shard), tokens, lens
        )
        out2 = sampling.sample_groups(CFG, jax.device_put(PARAMS, p_shard), tokens, lens, keys, max_new_tokens=4)
    want = jax.sharding.NamedSharding(mesh, P(None, ("fsdp", "sequence"), None, "tensor", None))
    assert cache.k_LBSKH.sharding.is_equivalent_to(want, 5), cache.k_LBSKH.sharding
    assert cache.k_LBSKH.addressable_shards[0].data.size * 8 == cache.k_LBSKH.size
    ref2 = sampling.sample_groups(CFG, PARAMS, tokens, lens, keys, max_new_tokens=4)
    np.testing.assert_array_equal(np.asarray(out2.tokens_BGR), np.asarray(ref2.tokens_BGR))
