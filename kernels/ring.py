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

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from kernels import flash
from kernels.block_mask import MaskSpec, block_visible
from kernels.reference import MASK_VALUE
from kernels.ring_pair import PairImpl, PairStatic, merge, pair_backward, pair_forward

SKIP, FULL, DIAGONAL = 0, 1, 2  # pair modes


# ----------------------------------------------------------------------------- schedule
def chunk_ids(device, num_devices: int, causal: bool):
    """Global chunk ids (of 2P chunks) held by `device`: zigzag when causal, else contiguous."""
    if causal:
        return device, 2 * num_devices - 1 - device
    return 2 * device, 2 * device + 1


def pair_mode(q_chunk, kv_chunk, causal: bool):
    """SKIP / FULL / DIAGONAL for a (q chunk, kv chunk) pair; works on ints and traced ints."""
    if not causal:
        return FULL if isinstance(q_chunk, int) else jnp.int32(FULL)
    if isinstance(q_chunk, int) and isinstance(kv_chunk, int):
        return SKIP if kv_chunk > q_chunk else (DIAGONAL if kv_chunk == q_chunk else FULL)
    return jnp.where(kv_chunk > q_chunk, SKIP, jnp.where(kv_chunk == q_chunk, DIAGONAL, FULL))


def ring_schedule(num_devices: int, causal: bool, zigzag: bool = True) -> np.ndarray:
    """[device, step] number of computed (not fully masked) chunk pairs, without segments."""
    ids = (lambda d: chunk_ids(d, num_devices, causal)) if zigzag else (
        lambda d: (2 * d, 2 * d + 1))
    out = np.zeros((num_devices, num_devices), dtype=int)
    for d in range(num_devices):
        for step in range(num_devices):
            src = (d - step) % num_devices
            out[d, step] = sum(pair_mode(qc, kc, causal) != SKIP
                               for qc in ids(d) for kc in ids(src))
    return out


# ----------------------------------------------------------------------------- public wrapper
@dataclasses.dataclass(frozen=True)
class RingStatic:
    mesh: Mesh
    axis_name: str
    batch_axis: str | tuple[str, ...] | None
    head_axis: str | None
    causal: bool
    has_segments: bool
    shared_prefix_segment: int | None
    pair: PairStatic

    @property
    def num_devices(self) -> int:
        return self.mesh.shape[self.axis_name]


def ring_attention(q_BTNH, k_BSKH, v_BSKH, *, mesh: Mesh, axis_name: str = "sequence",
                   causal: bool = True, q_segment_ids_BT=None, kv_segment_ids_BS=None,
                   shared_prefix_segment: int | None = None, sm_scale: float | None = None,
                   batch_axis: str | tuple[str, ...] | None = None, head_axis: str | None = None,
                   pair_impl: PairImpl | None = None, block_q: int | None = None,
                   block_k: int | None = None, interpret: bool | None = None,
                   kernel: str | None = None):
    """Attention with the semantics of `reference_attention`, sequence-sharded over `axis_name`.

    batch_axis/head_axis: optional mesh axes the batch / head dims are sharded over (both N and K
    must then divide by that axis size). pair_impl: "flash" or "xla" per chunk pair (default:
    "xla" on CPU, "flash" elsewhere); block_q/block_k/interpret/kernel are passed to flash.
    """
    flash.check_inputs(q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS,
                  shared_prefix_segment)
    B, T, N, H = q_BTNH.shape
    if axis_name not in mesh.shape:
        raise ValueError(f"axis_name={axis_name!r} is not a mesh axis {tuple(mesh.shape)}")
    num = mesh.shape[axis_name]
    if k_BSKH.shape[1] != T:
        raise ValueError(f"ring attention needs self-attention: T={T} != S={k_BSKH.shape[1]}")
    if T % (2 * num):
        raise ValueError(f"sequence length T={T} must be divisible by 2 * {axis_name} size "
                         f"= {2 * num}")
    if pair_impl is None:
        pair_impl = "xla" if flash.target_backend() == "cpu" else "flash"
    if pair_impl not in ("xla", "flash"):
        raise ValueError(f"pair_impl={pair_impl!r} must be 'xla' or 'flash'")
    has_segments = q_segment_ids_BT is not None
    pair = PairStatic(impl=pair_impl, has_segments=has_segments,
                      shared_prefix_segment=shared_prefix_segment,
                      sm_scale=float(H**-0.5 if sm_scale is None else sm_scale),
                      block_q=block_q, block_k=block_k,
                      interpret=flash.resolve_interpret(interpret),
                      kernel=flash.resolve_kernel(kernel))
    static = RingStatic(mesh=mesh, axis_name=axis_name, batch_axis=batch_axis,
                        head_axis=head_axis, causal=causal, has_segments=has_segments,
                        shared_prefix_segment=shared_prefix_segment, pair=pair)
    if q_segment_ids_BT is None:  # dummy ids keep one code path; has_segments=False ignores them
        q_segment_ids_BT = kv_segment_ids_BS = jnp.zeros((B, T), jnp.int32)
    return _ring_core(static, q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT.astype(jnp.int32),
                      kv_segment_ids_BS.astype(jnp.int32))


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
        functools.partial(_forward_local, static), mesh=static.mesh,
        in_specs=specs, out_specs=(qkv, *specs, qkv, qkv), check_vma=_check_vma(static),
    )(*_place(static, (q, k, v, q_seg, kv_seg), specs))
    return out, tuple(res)  # residuals stay in the zigzag layout (opaque to the caller)


def _ring_core_bwd(static, res, do):
    qkv, seg = _specs(static)
    specs = (qkv, qkv, qkv, seg, seg, qkv, qkv, qkv)
    dq, dk, dv = jax.shard_map(
        functools.partial(_backward_local, static), mesh=static.mesh,
        in_specs=specs, out_specs=(qkv, qkv, qkv), check_vma=_check_vma(static),
    )(*_place(static, (*res, do), specs))
    return dq, dk, dv, None, None


_ring_core.defvjp(_ring_core_fwd, _ring_core_bwd)


# ----------------------------------------------------------------------------- per device
def _varying_like(x, ref):
    """Mark a fresh constant as varying over the mesh axes `ref` varies over (loop carries)."""
    missing = tuple(sorted(jax.typeof(ref).mat.varying - jax.typeof(x).mat.varying))
    return lax.pcast(x, missing, to="varying") if missing else x


def _rotate(static: RingStatic, xs):
    n = static.num_devices
    return lax.ppermute(xs, static.axis_name, [(i, (i + 1) % n) for i in range(n)])


def _halves(x):
    c = x.shape[1] // 2
    return x[:, :c], x[:, c:]


def _pair_mode(static, q_chunk, kv_chunk, q_seg, kv_seg):
    mode = pair_mode(q_chunk, kv_chunk, static.causal)
    if static.has_segments:  # skip pairs whose segment ranges cannot meet (any batch row)
        spec = MaskSpec(causal=False, q_len=1, kv_len=1, has_segments=True,
                        shared_prefix_segment=static.shared_prefix_segment)
        seen = block_visible(spec, 0, 0, 1, 1, (jnp.min(q_seg, axis=1), jnp.max(q_seg, axis=1)),
                             (jnp.min(kv_seg, axis=1), jnp.max(kv_seg, axis=1)))
        mode = jnp.where(jnp.any(seen), mode, SKIP)
    return mode


def _zigzag_moves(num: int):
    """For each (natural half h, zigzag slot s): the ppermute pairs moving those chunks.

    Natural layout: device d holds chunks 2d, 2d+1. Zigzag: device d holds chunks d, 2P-1-d.
    Within one (h, s) group every device sends and receives at most one chunk, so each group is
    one ppermute; the four together are an all-to-all of the local data (no gather).
    """
    moves = {}
    for c in range(2 * num):
        dest, slot = (c, 0) if c < num else (2 * num - 1 - c, 1)
        moves.setdefault((c % 2, slot), []).append((c // 2, dest))
    return moves


def _to_zigzag(static: RingStatic, x, inverse: bool = False):
    if not static.causal:
        return x
    parts = _halves(x)
    out = [jnp.zeros_like(parts[0]), jnp.zeros_like(parts[1])]
    for (h, s), pairs in _zigzag_moves(static.num_devices).items():
        src, dst = (s, h) if inverse else (h, s)
        perm = [(b, a) for a, b in pairs] if inverse else pairs
        out[dst] = out[dst] + lax.ppermute(parts[src], static.axis_name, perm)
    return jnp.concatenate(out, axis=1)


def _forward_local(static: RingStatic, q, k, v, q_seg, kv_seg):
    q, k, v, q_seg, kv_seg = (_to_zigzag(static, x) for x in (q, k, v, q_seg, kv_seg))
    out, lse = _forward_zigzag(static, q, k, v, q_seg, kv_seg)
    return _to_zigzag(static, out, inverse=True), q, k, v, q_seg, kv_seg, out, lse


def _backward_local(static: RingStatic, q, k, v, q_seg, kv_seg, out, lse, do):
    grads = _backward_zigzag(static, q, k, v, q_seg, kv_seg, out, lse, _to_zigzag(static, do))
    return tuple(_to_zigzag(static, g, inverse=True) for g in grads)


def _pair_forward(static, mode, q, k, v, q_seg, kv_seg, carry):
    """Merge one chunk pair into the running (o_BCNH, lse_BCN) unless it is skipped."""

    def attend(diagonal, carry):
        return merge(*carry, *pair_forward(static.pair, diagonal, q, k, v, q_seg, kv_seg))

    return lax.switch(mode, [lambda c: c, functools.partial(attend, False),
                             functools.partial(attend, True)], carry)


def _pair_backward(static, mode, q, k, v, q_seg, kv_seg, do, lse, delta):
    def skip():
        return tuple(_varying_like(jnp.zeros(x.shape, jnp.float32), q) for x in (q, k, v))

    def grads(diagonal):
        return pair_backward(static.pair, diagonal, q, k, v, q_seg, kv_seg, do, lse, delta)

    return lax.switch(mode, [skip, lambda: grads(False), lambda: grads(True)])


def _stacked_halves(x):  # [B, 2C, ...] -> [2, B, C, ...]
    return jnp.stack(_halves(x))


def _unstack_halves(x):  # [2, B, C, ...] -> [B, 2C, ...]
    return jnp.concatenate([x[0], x[1]], axis=1)


# The 4 (q half, kv half) pairs of a step run in a fori_loop, not unrolled, so each pair kernel
# (full / diagonal, forward / backward) is traced and compiled once.
def _forward_zigzag(static: RingStatic, q, k, v, q_seg, kv_seg):
    B, L, N, H = q.shape
    C, n = L // 2, static.num_devices
    me = lax.axis_index(static.axis_name)
    q_ids = jnp.stack(chunk_ids(me, n, static.causal))
    qs, q_segs = _stacked_halves(q), _stacked_halves(q_seg)
    o0 = _varying_like(jnp.zeros((2, B, C, N, H), jnp.float32), q)
    lse0 = _varying_like(jnp.full((2, B, C, N), MASK_VALUE, jnp.float32), q)

    def attend_held(step, carry, k, v, kv_seg):
        kv_ids = jnp.stack(chunk_ids((me - step) % n, n, static.causal))
        ks, vs, kv_segs = _stacked_halves(k), _stacked_halves(v), _stacked_halves(kv_seg)

        def pair(idx, carry):
            (o, lse), qi, ki = carry, idx // 2, idx % 2
            mode = _pair_mode(static, q_ids[qi], kv_ids[ki], q_segs[qi], kv_segs[ki])
            o_q, lse_q = _pair_forward(static, mode, qs[qi], ks[ki], vs[ki], q_segs[qi],
                                       kv_segs[ki], (o[qi], lse[qi]))
            return o.at[qi].set(o_q), lse.at[qi].set(lse_q)

        return lax.fori_loop(0, 4, pair, carry)

    def step(s, state):
        carry, k, v, kv_seg = state
        carry = attend_held(s, carry, k, v, kv_seg)
        return (carry, *_rotate(static, (k, v, kv_seg)))

    carry, k, v, kv_seg = lax.fori_loop(0, n - 1, step, ((o0, lse0), k, v, kv_seg))
    o, lse = attend_held(n - 1, carry, k, v, kv_seg)  # last step: no rotation needed
    # lse travels as [B, L, N, 1] so it shares q's partition spec.
    return _unstack_halves(o).astype(q.dtype), _unstack_halves(lse)[..., None]


def _backward_zigzag(static: RingStatic, q, k, v, q_seg, kv_seg, out, lse, do):
    B, L, N, H = q.shape
    C, n = L // 2, static.num_devices
    me = lax.axis_index(static.axis_name)
    q_ids = jnp.stack(chunk_ids(me, n, static.causal))
    qs, dos, q_segs = _stacked_halves(q), _stacked_halves(do), _stacked_halves(q_seg)
    delta = jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32), axis=-1)  # [B, L, N]
    lses, deltas = _stacked_halves(lse[..., 0]), _stacked_halves(delta)

    def step(s, state):
        dq, k, v, kv_seg, dk, dv = state
        kv_ids = jnp.stack(chunk_ids((me - s) % n, n, static.causal))
        ks, vs, kv_segs = _stacked_halves(k), _stacked_halves(v), _stacked_halves(kv_seg)

        def pair(idx, grads):
            (dq, dk, dv), qi, ki = grads, idx // 2, idx % 2
            mode = _pair_mode(static, q_ids[qi], kv_ids[ki], q_segs[qi], kv_segs[ki])
            dq_, dk_, dv_ = _pair_backward(static, mode, qs[qi], ks[ki], vs[ki], q_segs[qi],
                                           kv_segs[ki], dos[qi], lses[qi], deltas[qi])
            return dq.at[qi].add(dq_), dk.at[ki].add(dk_), dv.at[ki].add(dv_)

        dq, dk, dv = lax.fori_loop(0, 4, pair, (dq, dk, dv))
        # dk/dv travel with their K/V; after n rotations they are back with the owner.
        return (dq, *_rotate(static, (k, v, kv_seg, dk, dv)))

    dq0 = _varying_like(jnp.zeros((2, B, C, N, H), jnp.float32), q)
    dkv0 = _varying_like(jnp.zeros((2,) + _half_shape(k), jnp.float32), q)
    dq, _, _, _, dk, dv = lax.fori_loop(0, n, step, (dq0, k, v, kv_seg, dkv0, dkv0))
    return (_unstack_halves(dq).astype(q.dtype), _unstack_halves(dk).astype(k.dtype),
            _unstack_halves(dv).astype(v.dtype))


def _half_shape(k):  # shape of one half of a local [B, 2C, K, H] shard
    return (k.shape[0], k.shape[1] // 2) + k.shape[2:]
