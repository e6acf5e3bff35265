"""Ring attention: sequence-parallel attention under `shard_map` over one mesh axis.

    out_BTNH = ring_attention(q_BTNH, k_BSKH, v_BSKH, mesh=mesh, axis_name="sequence")

Global arrays go in and come out; inside, each of the P devices on `axis_name` holds T/P queries
and T/P keys/values. K/V (with their segment ids) rotate around the ring with `ppermute`; at every
step each device attends its queries to the K/V chunk it holds and merges the result into an
online softmax (normalised f32 output and log-sum-exp per query row), so no device ever holds
more than one extra K/V shard.

Load balance (causal): the sequence is cut into 2P chunks and device d holds chunks d and
2P-1-d ("zigzag"). Every device then computes exactly 2P+1 of the (q chunk, kv chunk) pairs that
are not fully masked (3 at the step where it holds its own K/V, 2 at every other step), instead of
1..2P-1 with contiguous chunks. `ring_schedule` gives these counts from the same `pair_mode` the
kernel uses. Inputs and outputs keep the natural order; inside `shard_map` four ppermutes (an
all-to-all of the local data, `_to_zigzag`) move chunks into zigzag order and back. A data
pipeline could emit the zigzag order directly to save that exchange (not done).
Non-causal attention keeps contiguous chunks (all pairs are full, balance is automatic).

Backward: a custom_vjp around the whole ring (not autodiff through the loop, which would save
every step's scores or every step's K/V). The forward saves only q, k, v, o and the log-sum-exp
(all sharded, O(T/P) per device). The backward runs a second ring: K/V rotate again together with
their dk/dv accumulators, dq accumulates in place; after P rotations each dk/dv is back on the
device that owns that K/V chunk.

GQA: queries are viewed as [.., K, G, ..] against [.., K, ..] keys; K/V are never repeated.
Each chunk pair (C = T/(2P) tokens each) is computed by `kernels/ring_pair.py`: the Pallas flash
kernels (O(C) memory; default on GPU/TPU) or plain jnp with a [C, C] score tile (default on CPU,
where interpret-mode Pallas is slow to compile). Fully masked pairs (causal, or disjoint segment
ranges) are skipped with `lax.switch`. Requires self-attention (T == S), T divisible by 2P.
With flash pairs the shard_map runs with check_vma=False (jax 0.10.2's Pallas interpreter loses
the varying-axes annotation of its loop carries). Pass `batch_axis`/`head_axis` when the batch or
heads are sharded, otherwise shard_map gathers them onto every device of the ring.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from kernels import backend, flash
from kernels.ring_pair import PairImpl, PairStatic
from kernels.ring_schedule import RingStatic, to_zigzag
from kernels.ring_steps import backward_zigzag, forward_zigzag


# ----------------------------------------------------------------------------- public wrapper
def ring_attention(
    q_BTNH,
    k_BSKH,
    v_BSKH,
    *,
    mesh: Mesh,
    axis_name: str = "sequence",
    causal: bool = True,
    q_segment_ids_BT=None,
    kv_segment_ids_BS=None,
    shared_prefix_segment: int | None = None,
    sm_scale: float | None = None,
    batch_axis: str | tuple[str, ...] | None = None,
    head_axis: str | None = None,
    pair_impl: PairImpl | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    interpret: bool | None = None,
    kernel: str | None = None,
):
    """Attention with the semantics of `reference_attention`, sequence-sharded over `axis_name`.

    batch_axis/head_axis: optional mesh axes the batch / head dims are sharded over (both N and K
    must then divide by that axis size). pair_impl: "flash" or "xla" per chunk pair (default:
    "xla" on CPU, "flash" elsewhere); block_q/block_k/interpret/kernel are passed to flash.
    """
    flash.check_inputs(q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS, shared_prefix_segment)
    B, T, N, H = q_BTNH.shape
    if axis_name not in mesh.shape:
        raise ValueError(f"axis_name={axis_name!r} is not a mesh axis {tuple(mesh.shape)}")
    num = mesh.shape[axis_name]
    if k_BSKH.shape[1] != T:
        raise ValueError(f"ring attention needs self-attention: T={T} != S={k_BSKH.shape[1]}")
    if T % (2 * num):
        raise ValueError(f"sequence length T={T} must be divisible by 2 * {axis_name} size = {2 * num}")
    if pair_impl is None:
        pair_impl = "xla" if backend.target_backend() == "cpu" else "flash"
    if pair_impl not in ("xla", "flash"):
        raise ValueError(f"pair_impl={pair_impl!r} must be 'xla' or 'flash'")
    has_segments = q_segment_ids_BT is not None
    pair = PairStatic(
        impl=pair_impl,
        has_segments=has_segments,
        shared_prefix_segment=shared_prefix_segment,
        sm_scale=float(H**-0.5 if sm_scale is None else sm_scale),
        block_q=block_q,
        block_k=block_k,
        interpret=backend.resolve_interpret(interpret),
        kernel=backend.resolve_kernel(kernel),
    )
    static = RingStatic(
        mesh=mesh,
        axis_name=axis_name,
        batch_axis=batch_axis,
        head_axis=head_axis,
        causal=causal,
        has_segments=has_segments,
        shared_prefix_segment=shared_prefix_segment,
        pair=pair,
    )
    if q_segment_ids_BT is None:  # dummy ids keep one code path; has_segments=False ignores them
        q_segment_ids_BT = kv_segment_ids_BS = jnp.zeros((B, T), jnp.int32)
    return _ring_core(
        static, q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT.astype(jnp.int32), kv_segment_ids_BS.astype(jnp.int32)
    )


def _specs(static: RingStatic):
    qkv = P(static.batch_axis, static.axis_name, static.head_axis, None)
    seg = P(static.batch_axis, static.axis_name)
    return qkv, seg


def _place(static: RingStatic, xs, specs):
    """Put inputs on the shard_map layout: explicit-axis meshes require an exact match (reshard);
    with auto axes shard_map itself inserts the resharding."""
    if AxisType.Explicit not in static.mesh.axis_types:
        return list(xs)
    return [jax.reshard(x, NamedSharding(static.mesh, s)) for x, s in zip(xs, specs)]


def _check_vma(static: RingStatic) -> bool:
    # Pallas calls inside shard_map trip jax 0.10.2's varying-axes check (its interpreter's scan
    # carries lose the annotation; the error message itself suggests check_vma=False).
    return static.pair.impl != "flash"


# ----------------------------------------------------------------------------- custom_vjp
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ring_core(static, q, k, v, q_seg, kv_seg):
    return _ring_core_fwd(static, q, k, v, q_seg, kv_seg)[0]


def _ring_core_fwd(static, q, k, v, q_seg, kv_seg):
    qkv, seg = _specs(static)
    specs = (qkv, qkv, qkv, seg, seg)
    out, *res = jax.shard_map(
        functools.partial(_forward_local, static),
        mesh=static.mesh,
        in_specs=specs,
        out_specs=(qkv, *specs, qkv, qkv),
        check_vma=_check_vma(static),
    )(*_place(static, (q, k, v, q_seg, kv_seg), specs))
    return out, tuple(res)  # residuals stay in the zigzag layout (opaque to the caller)


def _ring_core_bwd(static, res, do):
    qkv, seg = _specs(static)
    specs = (qkv, qkv, qkv, seg, seg, qkv, qkv, qkv)
    dq, dk, dv = jax.shard_map(
        functools.partial(_backward_local, static),
        mesh=static.mesh,
        in_specs=specs,
        out_specs=(qkv, qkv, qkv),
        check_vma=_check_vma(static),
    )(*_place(static, (*res, do), specs))
    return dq, dk, dv, None, None


_ring_core.defvjp(_ring_core_fwd, _ring_core_bwd)


def _forward_local(static: RingStatic, q, k, v, q_seg, kv_seg):
    q, k, v, q_seg, kv_seg = (to_zigzag(static, x) for x in (q, k, v, q_seg, kv_seg))
    out, lse = forward_zigzag(static, q, k, v, q_seg, kv_seg)
    return to_zigzag(static, out, inverse=True), q, k, v, q_seg, kv_seg, out, lse


def _backward_local(static: RingStatic, q, k, v, q_seg, kv_seg, out, lse, do):
    grads = backward_zigzag(static, q, k, v, q_seg, kv_seg, out, lse, to_zigzag(static, do))
    return tuple(to_zigzag(static, g, inverse=True) for g in grads)
