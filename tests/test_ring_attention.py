"""Ring attention on 8 fake CPU devices equals full attention; the zigzag schedule is balanced.

Tolerances (f32, max abs error, inputs ~N(0,1)): output 1e-5, dq/dk/dv 1e-4. Chunk pairs are
computed with the plain-jnp pair implementation (CPU default) except in test_ring_with_flash_pairs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType

from kernels.reference import reference_attention
from kernels.ring import ring_attention
from kernels.ring_schedule import ring_schedule

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def inputs(B=2, T=64, N=4, K=2, H=16, seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(ks[0], (B, T, N, H))
    k, v = (jax.random.normal(x, (B, T, K, H)) for x in ks[1:3])
    return (q, k, v), jax.random.normal(ks[3], (B, T, N, H))


def out_and_grads(attn, args, ct):
    out, vjp = jax.vjp(attn, *args)
    return out, vjp(ct)


def check_against_reference(mesh, kw, ring_kw=None, **shape):
    args, ct = inputs(**shape)
    ring = jax.jit(
        lambda *a: out_and_grads(lambda q, k, v: ring_attention(q, k, v, mesh=mesh, **kw, **(ring_kw or {})), a, ct),
        compiler_options=FAST_COMPILE,
    )
    ref = jax.jit(lambda *a: out_and_grads(lambda q, k, v: reference_attention(q, k, v, **kw), a, ct))
    (out, grads), (ref_out, ref_grads) = ring(*args), ref(*args)
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=0)
    for name, g, r in zip("qkv", grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=0, err_msg=f"d{name}")


@pytest.mark.parametrize("causal", [True, False])
def test_ring_8_devices_matches_full_attention(causal):
    mesh = jax.make_mesh((8,), ("sequence",))
    check_against_reference(mesh, dict(causal=causal), N=8, K=2)  # GQA 4


def test_ring_shared_prefix_with_data_axis():
    """Mesh (data=2, sequence=4), batch sharded over data, GRPO [prompt | resp... | pad] layout,
    auto axis types (the model's mesh may be either)."""
    mesh = jax.make_mesh((2, 4), ("data", "sequence"), axis_types=(AxisType.Auto,) * 2)
    seg = jnp.array([[1] * 20 + [2] * 17 + [3] * 21 + [0] * 6, [1] * 9 + [2] * 30 + [3] * 25])
    kw = dict(causal=True, q_segment_ids_BT=seg, kv_segment_ids_BS=seg, shared_prefix_segment=1)
    check_against_reference(mesh, kw, ring_kw=dict(batch_axis="data"), N=4, K=4)


def test_ring_with_flash_pairs():
    """Chunk pairs computed by the Pallas flash kernels (interpret mode; the GPU/TPU default):
    mesh sequence=4, GQA 2, shared-prefix segments, head dim 64, chunk 16 with 8-token blocks."""
    mesh = jax.make_mesh((4,), ("sequence",))
    seg = jnp.array([[1] * 20 + [2] * 17 + [3] * 21 + [0] * 6, [1] * 9 + [2] * 30 + [3] * 25])
    kw = dict(causal=True, q_segment_ids_BT=seg, kv_segment_ids_BS=seg, shared_prefix_segment=1)
    check_against_reference(mesh, kw, ring_kw=dict(pair_impl="flash", block_q=8, block_k=8), N=4, K=2, H=64)


def test_ring_under_abstract_explicit_mesh():
    """The model passes `jax.sharding.get_abstract_mesh()` under `jax.set_mesh`."""
    mesh = jax.make_mesh((8,), ("sequence",), axis_types=(AxisType.Explicit,))
    args, _ = inputs()
    with jax.set_mesh(mesh):
        out = jax.jit(lambda *a: ring_attention(*a, mesh=jax.sharding.get_abstract_mesh()))(*args)
    np.testing.assert_allclose(out, reference_attention(*args), atol=1e-5, rtol=0)


def test_zigzag_load_balance():
    """Computed (not fully masked) chunk pairs per device: equal under zigzag (2P+1 each: 3 at the
    step holding its own K/V, 2 at every other), unequal with contiguous chunks."""
    for num in (2, 4, 8):
        per_device = ring_schedule(num, causal=True).sum(axis=1)
        assert (per_device == 2 * num + 1).all(), per_device
        steps = ring_schedule(num, causal=True)
        assert (steps[:, 0] == 3).all() and (steps[:, 1:] == 2).all()
        contiguous = ring_schedule(num, causal=True, zigzag=False).sum(axis=1)
        assert contiguous.max() > contiguous.min()  # what zigzag fixes
        assert per_device.sum() == contiguous.sum() == num * (2 * num + 1)  # same total work
    assert (ring_schedule(4, causal=False) == 4).all()


def test_ring_validation():
    mesh = jax.make_mesh((8,), ("sequence",))
    (q, k, v), _ = inputs(T=40)
    with pytest.raises(ValueError, match="divisible by 2"):
        ring_attention(q, k, v, mesh=mesh)
    (q, k, v), _ = inputs()
    with pytest.raises(ValueError, match="not a mesh axis"):
        ring_attention(q, k, v, mesh=mesh, axis_name="seq")
    with pytest.raises(ValueError, match="self-attention"):
        ring_attention(q, k[:, :32], v[:, :32], mesh=mesh)
