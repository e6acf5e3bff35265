"""The per-device loops of ring attention (inside `shard_map`, on zigzag-ordered chunks).

Forward: at every step each device attends its two q chunks to the two K/V chunks it holds and
merges the result into an online softmax (normalised f32 output and log-sum-exp per query row),
then K/V (with their segment ids) rotate one device along the ring with `ppermute`. Backward: a
second ring; K/V rotate again together with their dk/dv accumulators, dq accumulates in place;
after P rotations each dk/dv is back on the device that owns that K/V chunk. Fully masked pairs
(causal, or disjoint segment ranges) are skipped with `lax.switch`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from kernels.block_mask import MaskSpec, block_visible
from kernels.reference import MASK_VALUE
from kernels.ring_pair import merge, pair_backward, pair_forward
from kernels.ring_schedule import SKIP, RingStatic, chunk_ids, halves, pair_mode


def _varying_like(x, ref):
    """Mark a fresh constant as varying over the mesh axes `ref` varies over (loop carries)."""
    missing = tuple(sorted(jax.typeof(ref).mat.varying - jax.typeof(x).mat.varying))
    return lax.pcast(x, missing, to="varying") if missing else x


def _rotate(static: RingStatic, xs):
    n = static.num_devices
    return lax.ppermute(xs, static.axis_name, [(i, (i + 1) % n) for i in range(n)])


def _pair_mode(static, q_chunk, kv_chunk, q_seg, kv_seg):
    mode = pair_mode(q_chunk, kv_chunk, static.causal)
    if static.has_segments:  # skip pairs whose segment ranges cannot meet (any batch row)
        spec = MaskSpec(
            causal=False, q_len=1, kv_len=1, has_segments=True, shared_prefix_segment=static.shared_prefix_segment
        )
        seen = block_visible(
            spec,
            0,
            0,
            1,
            1,
            (jnp.min(q_seg, axis=1), jnp.max(q_seg, axis=1)),
            (jnp.min(kv_seg, axis=1), jnp.max(kv_seg, axis=1)),
        )
        mode = jnp.where(jnp.any(seen), mode, SKIP)
    return mode


def _pair_forward(static, mode, q, k, v, q_seg, kv_seg, carry):
    """Merge one chunk pair into the running (o_BCNH, lse_BCN) unless it is skipped."""

    def attend(diagonal, carry):
        return merge(*carry, *pair_forward(static.pair, diagonal, q, k, v, q_seg, kv_seg))

    return lax.switch(mode, [lambda c: c, functools.partial(attend, False), functools.partial(attend, True)], carry)


def _pair_backward(static, mode, q, k, v, q_seg, kv_seg, do, lse, delta):
    def skip():
        return tuple(_varying_like(jnp.zeros(x.shape, jnp.float32), q) for x in (q, k, v))

    def grads(diagonal):
        return pair_backward(static.pair, diagonal, q, k, v, q_seg, kv_seg, do, lse, delta)

    return lax.switch(mode, [skip, lambda: grads(False), lambda: grads(True)])


def _stacked_halves(x):  # [B, 2C, ...] -> [2, B, C, ...]
    return jnp.stack(halves(x))


def _unstack_halves(x):  # [2, B, C, ...] -> [B, 2C, ...]
    return jnp.concatenate([x[0], x[1]], axis=1)


# The 4 (q half, kv half) pairs of a step run in a fori_loop, not unrolled, so each pair kernel
# (full / diagonal, forward / backward) is traced and compiled once.
def forward_zigzag(static: RingStatic, q, k, v, q_seg, kv_seg):
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
            o_q, lse_q = _pair_forward(static, mode, qs[qi], ks[ki], vs[ki], q_segs[qi], kv_segs[ki], (o[qi], lse[qi]))
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


def backward_zigzag(static: RingStatic, q, k, v, q_seg, kv_seg, out, lse, do):
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
            dq_, dk_, dv_ = _pair_backward(
                static, mode, qs[qi], ks[ki], vs[ki], q_segs[qi], kv_segs[ki], dos[qi], lses[qi], deltas[qi]
            )
            return dq.at[qi].add(dq_), dk.at[ki].add(dk_), dv.at[ki].add(dv_)

        dq, dk, dv = lax.fori_loop(0, 4, pair, (dq, dk, dv))
        # dk/dv travel with their K/V; after n rotations they are back with the owner.
        return (dq, *_rotate(static, (k, v, kv_seg, dk, dv)))

    dq0 = _varying_like(jnp.zeros((2, B, C, N, H), jnp.float32), q)
    dkv0 = _varying_like(jnp.zeros((2,) + _half_shape(k), jnp.float32), q)
    dq, _, _, _, dk, dv = lax.fori_loop(0, n, step, (dq0, k, v, kv_seg, dkv0, dkv0))
    return (
        _unstack_halves(dq).astype(q.dtype),
        _unstack_halves(dk).astype(k.dtype),
        _unstack_halves(dv).astype(v.dtype),
    )


def _half_shape(k):  # shape of one half of a local [B, 2C, K, H] shard
    return (k.shape[0], k.shape[1] // 2) + k.shape[2:]
