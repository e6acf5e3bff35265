"""Ring attention: sequence-parallel attention under `shard_map` over one mesh axis.

    out_BTNH = ring_attention(q_BTNH, k_BSKH, v_BSKH, mesh=mesh, axis_name="sequence")

Global arrays go in and come out; inside, each of the P devices on `axis_name` holds T/P queries
and T/P keys/values. K/V (with their segment ids) rotate around the ring with `ppermute`; at every
step each device attends its queries to the K/V chunk it holds and merges the result into an
online softmax (running max, denominator and f32 accumulator), so no device ever holds more than
two K/V chunks or a [T/P, T/P]-sized score tile per pair of chunks.

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
Per-pair attention is plain jnp (one [C, C] score tile per pair of chunks of C = T/(2P) tokens);
on an accelerator the pair could be computed by the flash kernel's forward/backward pieces (not
done). Fully masked pairs (causal or disjoint segment ranges) are skipped with `lax.switch`.
Requires self-attention (T == S) and T divisible by 2P.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from kernels.block_mask import MaskSpec, block_visible
from kernels.flash import _check_inputs
from kernels.reference import MASK_VALUE

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
    sm_scale: float

    @property
    def num_devices(self) -> int:
        return self.mesh.shape[self.axis_name]


def ring_attention(q_BTNH, k_BSKH, v_BSKH, *, mesh: Mesh, axis_name: str = "sequence",
                   causal: bool = True, q_segment_ids_BT=None, kv_segment_ids_BS=None,
                   shared_prefix_segment: int | None = None, sm_scale: float | None = None,
                   batch_axis: str | tuple[str, ...] | None = None, head_axis: str | None = None):
    """Attention with the semantics of `reference_attention`, sequence-sharded over `axis_name`.

    batch_axis/head_axis: optional mesh axes the batch / head dims are sharded over (both N and K
    must then divide by that axis size).
    """
    _check_inputs(q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS,
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
    static = RingStatic(mesh=mesh, axis_name=axis_name, batch_axis=batch_axis,
                        head_axis=head_axis, causal=causal,
                        has_segments=q_segment_ids_BT is not None,
                        shared_prefix_segment=shared_prefix_segment,
                        sm_scale=float(H**-0.5 if sm_scale is None else sm_scale))
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


# ----------------------------------------------------------------------------- custom_vjp
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ring_core(static, q, k, v, q_seg, kv_seg):
    return _ring_core_fwd(static, q, k, v, q_seg, kv_seg)[0]


def _ring_core_fwd(static, q, k, v, q_seg, kv_seg):
    qkv, seg = _specs(static)
    specs = (qkv, qkv, qkv, seg, seg)
    out, *res = jax.shard_map(
        functools.partial(_forward_local, static), mesh=static.mesh,
        in_specs=specs, out_specs=(qkv, *specs, qkv, qkv),
    )(*_place(static, (q, k, v, q_seg, kv_seg), specs))
    return out, tuple(res)  # residuals stay in the zigzag layout (opaque to the caller)


def _ring_core_bwd(static, res, do):
    qkv, seg = _specs(static)
    specs = (qkv, qkv, qkv, seg, seg, qkv, qkv, qkv)
    dq, dk, dv = jax.shard_map(
        functools.partial(_backward_local, static), mesh=static.mesh,
        in_specs=specs, out_specs=(qkv, qkv, qkv),
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


def _pair_mask(static, q_seg_BC, kv_seg_BC, diagonal: bool):
    """[B, 1, 1, C, C] mask of a chunk pair (diagonal: same global chunk, so causal = tril)."""
    C = q_seg_BC.shape[1]
    mask = jnp.ones((1, C, C), bool)
    if diagonal:
        mask = mask & (jnp.arange(C)[None, :] <= jnp.arange(C)[:, None])[None]
    if static.has_segments:
        q, kv = q_seg_BC[:, :, None], kv_seg_BC[:, None, :]
        ok = q == kv
        if static.shared_prefix_segment is not None:
            ok = ok | ((kv == static.shared_prefix_segment) & (q != 0))
        mask = mask & ok
    return mask[:, None, None]


def _scores(static, q_BCKGH, k_BCKH, mask):
    s = jnp.einsum("bckgh,bskh->bkgcs", q_BCKGH, k_BCKH, preferred_element_type=jnp.float32)
    return jnp.where(mask, s * static.sm_scale, MASK_VALUE)


def _pair_forward(static, mode, q, k, v, q_seg, kv_seg, carry):
    """Merge one chunk pair into the online-softmax carry (acc [B,K,G,C,H], m, l [B,K,G,C])."""

    def attend(diagonal, carry):
        acc, m, l = carry
        mask = _pair_mask(static, q_seg, kv_seg, diagonal)
        s = _scores(static, q, k, mask)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
        alpha = jnp.exp(m - m_new)
        pv = jnp.einsum("bkgcs,bskh->bkgch", p.astype(v.dtype), v,
                        preferred_element_type=jnp.float32)
        return alpha[..., None] * acc + pv, m_new, alpha * l + jnp.sum(p, axis=-1)

    return lax.switch(mode, [lambda c: c, functools.partial(attend, False),
                             functools.partial(attend, True)], carry)


def _pair_backward(static, mode, q, k, v, q_seg, kv_seg, do, lse, delta):
    """(dq [B,C,K,G,H], dk, dv [B,C,K,H]) of one chunk pair, all f32 (scale applied)."""

    def grads(diagonal):
        mask = _pair_mask(static, q_seg, kv_seg, diagonal)
        s = _scores(static, q, k, mask)
        p = jnp.where(mask, jnp.exp(s - lse[..., None]), 0.0)
        dv = jnp.einsum("bkgcs,bckgh->bskh", p.astype(do.dtype), do,
                        preferred_element_type=jnp.float32)
        dp = jnp.einsum("bckgh,bskh->bkgcs", do, v, preferred_element_type=jnp.float32)
        ds = (p * (dp - delta[..., None])).astype(q.dtype)
        dq = jnp.einsum("bkgcs,bskh->bckgh", ds, k, preferred_element_type=jnp.float32)
        dk = jnp.einsum("bkgcs,bckgh->bskh", ds, q, preferred_element_type=jnp.float32)
        return dq * static.sm_scale, dk * static.sm_scale, dv

    def skip():
        return tuple(_varying_like(jnp.zeros(x.shape, jnp.float32), q) for x in (q, k, v))

    return lax.switch(mode, [skip, lambda: grads(False), lambda: grads(True)])


def _local_chunks(static, x_BLNH, K):
    B, L, N, H = x_BLNH.shape
    return [h.reshape(B, L // 2, K, N // K, H) for h in _halves(x_BLNH)]


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


def _forward_zigzag(static: RingStatic, q, k, v, q_seg, kv_seg):
    B, L, N, H = q.shape
    K, C, n = k.shape[2], L // 2, static.num_devices
    me = lax.axis_index(static.axis_name)
    q_ids = chunk_ids(me, n, static.causal)
    qs, q_segs = _local_chunks(static, q, K), _halves(q_seg)
    G = N // K
    zeros = _varying_like(jnp.zeros((B, K, G, C, H), jnp.float32), q)
    m0 = _varying_like(jnp.full((B, K, G, C), MASK_VALUE, jnp.float32), q)
    l0 = _varying_like(jnp.zeros((B, K, G, C), jnp.float32), q)

    def attend_held(step, carries, k, v, kv_seg):
        kv_ids = chunk_ids((me - step) % n, n, static.causal)
        ks, vs, kv_segs = _halves(k), _halves(v), _halves(kv_seg)
        new = []
        for qi in range(2):
            carry = carries[qi]
            for ki in range(2):
                mode = _pair_mode(static, q_ids[qi], kv_ids[ki], q_segs[qi], kv_segs[ki])
                carry = _pair_forward(static, mode, qs[qi], ks[ki], vs[ki], q_segs[qi],
                                      kv_segs[ki], carry)
            new.append(carry)
        return tuple(new)

    def step(s, state):
        carries, k, v, kv_seg = state
        carries = attend_held(s, carries, k, v, kv_seg)
        return (carries, *_rotate(static, (k, v, kv_seg)))

    init = ((zeros, m0, l0), (zeros, m0, l0))
    carries, k, v, kv_seg = lax.fori_loop(0, n - 1, step, (init, k, v, kv_seg))
    carries = attend_held(n - 1, carries, k, v, kv_seg)  # last step: no rotation needed
    outs, lses = [], []
    for acc, m, l in carries:
        empty = l == 0.0
        l_safe = jnp.where(empty, 1.0, l)
        outs.append((acc / l_safe[..., None]).transpose(0, 3, 1, 2, 4).reshape(B, C, N, H))
        lse = jnp.where(empty, MASK_VALUE, m + jnp.log(l_safe))
        lses.append(lse.transpose(0, 3, 1, 2).reshape(B, C, N))
    out = jnp.concatenate(outs, axis=1).astype(q.dtype)
    # lse travels as [B, L, N, 1] so it shares q's partition spec.
    return out, jnp.concatenate(lses, axis=1)[..., None]


def _backward_zigzag(static: RingStatic, q, k, v, q_seg, kv_seg, out, lse, do):
    B, L, N, H = q.shape
    K, C, n = k.shape[2], L // 2, static.num_devices
    me = lax.axis_index(static.axis_name)
    q_ids = chunk_ids(me, n, static.causal)
    qs, dos = _local_chunks(static, q, K), _local_chunks(static, do, K)
    q_segs = _halves(q_seg)
    delta = jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32), axis=-1)  # [B, L, N]

    def rows(x_BCN):  # [B, C, N] -> [B, K, G, C]
        return x_BCN.reshape(B, C, K, N // K).transpose(0, 2, 3, 1)

    lses = [rows(h) for h in _halves(lse[..., 0])]
    deltas = [rows(h) for h in _halves(delta)]

    def step(s, state):
        dqs, k, v, kv_seg, dk, dv = state
        kv_ids = chunk_ids((me - s) % n, n, static.causal)
        ks, vs, kv_segs = _halves(k), _halves(v), _halves(kv_seg)
        dqs, dks, dvs = list(dqs), list(_halves(dk)), list(_halves(dv))
        for qi in range(2):
            for ki in range(2):
                mode = _pair_mode(static, q_ids[qi], kv_ids[ki], q_segs[qi], kv_segs[ki])
                dq_, dk_, dv_ = _pair_backward(static, mode, qs[qi], ks[ki], vs[ki], q_segs[qi],
                                               kv_segs[ki], dos[qi], lses[qi], deltas[qi])
                dqs[qi], dks[ki], dvs[ki] = dqs[qi] + dq_, dks[ki] + dk_, dvs[ki] + dv_
        dk, dv = jnp.concatenate(dks, axis=1), jnp.concatenate(dvs, axis=1)
        # dk/dv travel with their K/V; after n rotations they are back with the owner.
        return (tuple(dqs), *_rotate(static, (k, v, kv_seg, dk, dv)))

    dq0 = _varying_like(jnp.zeros((B, C, K, N // K, H), jnp.float32), q)
    dkv0 = _varying_like(jnp.zeros(k.shape, jnp.float32), q)
    dqs, _, _, _, dk, dv = lax.fori_loop(0, n, step, ((dq0, dq0), k, v, kv_seg, dkv0, dkv0))
    dq = jnp.concatenate([d.reshape(B, C, N, H) for d in dqs], axis=1)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)
