"""The model with attention_impl `flash`, `blockwise` and `ring` gives the logits and gradients of `xla`.

Tiny 2-layer model, B=2 rows of T=64 tokens, three layouts: plain causal, packed sequences
(segment ids, positions restarting per segment, trailing padding) and the GRPO shared-prefix
layout `[prompt | resp_1 | resp_2 | resp_3 | pad]` with `shared_prefix_segment=1`.
`flash` runs the Pallas kernels in interpret mode on one device; `ring` runs on 8 fake devices,
mesh (data=2, fsdp=1, tensor=1, sequence=4), params sharded by sharding.param_shardings, tokens
over ("batch", "length"), and is compared with `xla` on one unsharded device.

Tolerances (f32, matmul precision "highest" from conftest): logits max abs error 1e-4 (logits are
O(1)); every gradient leaf max abs error 1e-4 relative to that leaf's largest entry.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwenlong_jax import models
from qwenlong_jax.models.attention import ring_axes
from qwenlong_jax.parallel import sharding

CFG = models.get_model_config(
    "tiny", vocab_size=128, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=96, num_layers=2
)
B, T = 2, 64
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _layout(name):
    """(segment_ids_BT, positions_BT, shared_prefix_segment) for each layout, as numpy."""
    if name == "causal":
        return None, None, None
    # packed: three / two documents per row, then padding; shared prefix: a prompt (segment 1)
    # and three responses per row.
    lens = [[20, 25, 13], [31, 27]] if name == "packed" else [[24, 12, 9, 15], [17, 20, 16, 5]]
    seg, pos = np.zeros((B, T), np.int32), np.zeros((B, T), np.int32)
    for b, row in enumerate(lens):
        w = 0
        for s, n in enumerate(row, start=1):
            seg[b, w : w + n] = s
            start = row[0] if (name == "prefix" and s > 1) else 0  # responses follow the prompt
            pos[b, w : w + n] = start + np.arange(n)
            w += n
        assert w <= T
    return seg, pos, (1 if name == "prefix" else None)


def _weights():
    """Random per-token weights of a scalar loss (zero on padding, whose output is arbitrary)."""
    return jax.random.normal(jax.random.key(2), (B, T, CFG.vocab_size))


PARAMS = jax.jit(models.init_params, static_argnums=(0, 2))(CFG, jax.random.key(0), 0.2)
TOKENS = jax.random.randint(jax.random.key(1), (B, T), 1, CFG.vocab_size)


def logits_and_grads(impl, layout, params, tokens, seg, pos):
    cfg = CFG.replace(attention_impl=impl)
    _, _, prefix = _layout(layout)
    w_BTV = _weights() * (1.0 if seg is None else (seg > 0)[..., None])

    def loss(p):
        logits = models.forward(cfg, p, tokens, pos, seg, shared_prefix_segment=prefix)
        return jnp.sum(jax.nn.log_softmax(logits) * w_BTV) / T, logits

    (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return logits, grads


@functools.cache
def reference(layout):
    seg, pos, _ = _layout(layout)
    f = jax.jit(functools.partial(logits_and_grads, "xla", layout))
    return jax.device_get(f(PARAMS, TOKENS, seg, pos))


def assert_matches_xla(layout, logits, grads):
    ref_logits, ref_grads = reference(layout)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-4, rtol=0)
    flat_ref = jax.tree_util.tree_leaves_with_path(ref_grads)
    flat = jax.tree.leaves(grads)
    assert len(flat) == len(flat_ref)
    for (path, r), g in zip(flat_ref, flat):
        scale = float(np.max(np.abs(r)))
        assert scale > 0, jax.tree_util.keystr(path)  # every parameter gets a gradient
        np.testing.assert_allclose(
            np.asarray(g) / scale, r / scale, atol=1e-4, rtol=0, err_msg=jax.tree_util.keystr(path)
        )


# No-segment causal flash is covered by tests/test_flash_attention.py; here the layouts with ids.
@pytest.mark.parametrize("layout", ["packed", "prefix"])
def test_flash_model_matches_xla(layout):
    seg, pos, _ = _layout(layout)
    f = jax.jit(functools.partial(logits_and_grads, "flash", layout), compiler_options=FAST_COMPILE)
    assert_matches_xla(layout, *f(PARAMS, TOKENS, seg, pos))


@pytest.mark.parametrize("layout", ["causal", "packed", "prefix"])
def test_blockwise_model_matches_xla(layout):
    seg, pos, _ = _layout(layout)
    f = jax.jit(functools.partial(logits_and_grads, "blockwise", layout))
    assert_matches_xla(layout, *f(PARAMS, TOKENS, seg, pos))


def test_blockwise_model_on_a_data_tensor_mesh_matches_xla():
    """Under a (data=2, tensor=2) mesh the kernel runs per shard of batch and heads."""
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=1, tensor=2, sequence=1), devices=jax.devices()[:4])
    p_shard = sharding.param_shardings(models.logical_axes(CFG), models.param_shapes(CFG), mesh)
    bt = sharding.named(mesh, "batch", "length")
    seg, pos, _ = _layout("prefix")
    f = jax.jit(functools.partial(logits_and_grads, "blockwise", "prefix"))
    with jax.set_mesh(mesh):
        logits, grads = f(
            jax.device_put(PARAMS, p_shard),
            jax.device_put(TOKENS, bt),
            jax.device_put(seg, bt),
            jax.device_put(pos, bt),
        )
    assert_matches_xla("prefix", logits, grads)


@pytest.mark.parametrize("layout", ["causal", "packed", "prefix"])
def test_ring_model_on_8_devices_matches_xla(layout):
    assert len(jax.devices()) == 8
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=1, tensor=1, sequence=4))
    p_shard = sharding.param_shardings(models.logical_axes(CFG), models.param_shapes(CFG), mesh)
    bt = sharding.named(mesh, "batch", "length")
    seg, pos, _ = _layout(layout)

    def put(x):
        return None if x is None else jax.device_put(x, bt)

    f = jax.jit(functools.partial(logits_and_grads, "ring", layout), compiler_options=FAST_COMPILE)
    with jax.set_mesh(mesh):
        logits, grads = f(jax.device_put(PARAMS, p_shard), put(TOKENS), put(seg), put(pos))
    # The sharded inputs stay sharded: logits keep batch over data (not gathered on one device).
    assert logits.sharding.spec[0] in ("data", ("data", "fsdp"), ("data",)), logits.sharding
    assert_matches_xla(layout, logits, grads)


def test_ring_axes_follow_the_rules_table():
    mesh = jax.sharding.AbstractMesh((2, 1, 2, 2), sharding.MESH_AXES)
    assert ring_axes(mesh, 4, 4, 2) == dict(batch_axis=("data", "fsdp"), head_axis="tensor")
    # Dimensions their axes do not divide stay unsharded (batch 3; kv heads 1 over tensor=2).
    assert ring_axes(mesh, 3, 4, 1) == dict(batch_axis=None, head_axis=None)
    mesh1 = jax.sharding.AbstractMesh((1, 1, 1, 8), sharding.MESH_AXES)
    assert ring_axes(mesh1, 4, 4, 2) == dict(batch_axis=None, head_axis=None)


def test_ring_without_sequence_axis_is_refused():
    mesh = sharding.make_mesh(sharding.MeshConfig(data=8))
    cfg = CFG.replace(attention_impl="ring")
    with jax.set_mesh(mesh), pytest.raises(ValueError, match="sequence"):
        jax.eval_shape(lambda p, t: models.forward(cfg, p, t), PARAMS, TOKENS)
