"""The loops of blockwise attention (kernels/blockwise.py): forward and backward over the visible
(q block, kv block) pairs of a schedule, in plain lax.

* Forward: per q block, all N query heads at once as [K, G * block_q, H] against a kv block
  [K, block_k, H] (GQA: the G query heads of a kv head are rows of one matmul, K/V are never
  repeated), online softmax in f32, output and row log-sum-exp written per q block.
* Backward: ONE loop over the same visible pairs that recomputes p from the saved log-sum-exp
  and accumulates dq for the q block in the loop carry and dk/dv into [B, K, S, H] f32 buffers
  (dynamic-update-slice, in place), so each pair costs 5 matmuls (FlashAttention-2's split dq /
  dk-dv kernels recompute q k^T twice: 7).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from kernels.block_mask import element_mask
from kernels.reference import MASK_VALUE


def _scores_mask(static, q_KMH, k_KbH, q_seg_b, kv_seg_b, q_start, k_start):
    """Scaled masked scores [K, G, bq, bk] (f32) and the element mask [bq, bk]."""
    bq, bk = static.block_q, static.block_k
    K, M, H = q_KMH.shape
    s = lax.dot_general(q_KMH, k_KbH, (((2,), (2,)), ((0,), (0,))), preferred_element_type=jnp.float32)  # [K, G*bq, bk]
    s = s.reshape(K, M // bq, bq, bk) * static.sm_scale
    q_pos = q_start + lax.broadcasted_iota(jnp.int32, (bq, 1), 0)
    k_pos = k_start + lax.broadcasted_iota(jnp.int32, (1, bk), 1)
    q_seg = k_seg = None
    if static.mask.has_segments:
        q_seg = lax.dynamic_slice_in_dim(q_seg_b, q_start, bq)[:, None]
        k_seg = lax.dynamic_slice_in_dim(kv_seg_b, k_start, bk)[None, :]
    mask = element_mask(static.mask, q_pos, k_pos, q_seg, k_seg, kv_padded=static.mask.kv_len % bk != 0)
    return jnp.where(mask, s, MASK_VALUE), mask


def _q_block(x_BKGTH, b, q_start, bq):
    """[K, G * bq, H] block of q-shaped x at batch row b."""
    B, K, G, Tp, H = x_BKGTH.shape
    blk = lax.dynamic_slice(x_BKGTH, (b, 0, 0, q_start, 0), (1, K, G, bq, H))
    return blk.reshape(K, G * bq, H)


def _kv_block(x_BKSH, b, k_start, bk):
    B, K, Sp, H = x_BKSH.shape
    return lax.dynamic_slice(x_BKSH, (b, 0, k_start, 0), (1, K, bk, H))[0]


def blockwise_forward(static, q, k, v, q_seg, kv_seg, order, count):
    """(out [B, K, G, Tp, H] in q's dtype, lse [B, K, G, Tp] f32)."""
    B, K, G, Tp, H = q.shape
    bq, bk = static.block_q, static.block_k
    nq = Tp // bq

    def q_block(idx, carry):
        out, lse = carry
        b, i = idx // nq, idx % nq
        q_start = i * bq
        q_blk = _q_block(q, b, q_start, bq)

        def kv_step(t, c):
            acc, m, l = c
            j = order[b, i, t]
            k_blk, v_blk = _kv_block(k, b, j * bk, bk), _kv_block(v, b, j * bk, bk)
            s, mask = _scores_mask(static, q_blk, k_blk, q_seg[b], kv_seg[b], q_start, j * bk)
            m_new = jnp.maximum(m, s.max(-1, keepdims=True))
            p = jnp.where(mask, jnp.exp(s - m_new), 0.0)
            alpha = jnp.exp(m - m_new)
            pv = lax.dot_general(
                p.reshape(K, G * bq, bk).astype(v_blk.dtype),
                v_blk,
                (((2,), (1,)), ((0,), (0,))),
                preferred_element_type=jnp.float32,
            )
            acc = alpha * acc + pv.reshape(K, G, bq, H)
            return acc, m_new, alpha * l + p.sum(-1, keepdims=True)

        init = (
            jnp.zeros((K, G, bq, H), jnp.float32),
            jnp.full((K, G, bq, 1), MASK_VALUE, jnp.float32),
            jnp.zeros((K, G, bq, 1), jnp.float32),
        )
        acc, m, l = lax.fori_loop(0, count[b, i], kv_step, init)
        empty = l == 0.0
        l_safe = jnp.where(empty, 1.0, l)
        o_blk = (acc / l_safe).astype(out.dtype)
        lse_blk = jnp.where(empty, MASK_VALUE, m + jnp.log(l_safe))[..., 0]
        out = lax.dynamic_update_slice(out, o_blk[None], (b, 0, 0, q_start, 0))
        lse = lax.dynamic_update_slice(lse, lse_blk[None], (b, 0, 0, q_start))
        return out, lse

    init = (jnp.zeros(q.shape, q.dtype), jnp.zeros((B, K, G, Tp), jnp.float32))
    return lax.fori_loop(0, B * nq, q_block, init)


def blockwise_backward(static, q, k, v, q_seg, kv_seg, order, count, do, lse, delta):
    """(dq, dk, dv) in the inputs' dtypes: one pass over the visible pairs."""
    B, K, G, Tp, H = q.shape
    bq, bk = static.block_q, static.block_k
    nq = Tp // bq

    def q_block(idx, carry):
        dq, dk, dv = carry
        b, i = idx // nq, idx % nq
        q_start = i * bq
        q_blk = _q_block(q, b, q_start, bq)
        do_blk = _q_block(do, b, q_start, bq)
        lse_blk = lax.dynamic_slice(lse, (b, 0, 0, q_start), (1, K, G, bq))[0][..., None]
        delta_blk = lax.dynamic_slice(delta, (b, 0, 0, q_start), (1, K, G, bq))[0][..., None]

        def kv_step(t, c):
            dq_blk, dk, dv = c
            j = order[b, i, t]
            k_start = j * bk
            k_blk, v_blk = _kv_block(k, b, k_start, bk), _kv_block(v, b, k_start, bk)
            s, mask = _scores_mask(static, q_blk, k_blk, q_seg[b], kv_seg[b], q_start, k_start)
            p = jnp.where(mask, jnp.exp(s - lse_blk), 0.0)  # [K, G, bq, bk]
            p_KMb = p.reshape(K, G * bq, bk)
            dv_blk = lax.dot_general(
                p_KMb.astype(do_blk.dtype), do_blk, (((1,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32
            )  # [K, bk, H]
            dp = lax.dot_general(
                do_blk, v_blk, (((2,), (2,)), ((0,), (0,))), preferred_element_type=jnp.float32
            ).reshape(K, G, bq, bk)
            ds = (p * (dp - delta_blk)).reshape(K, G * bq, bk)
            dq_blk = dq_blk + lax.dot_general(
                ds.astype(k_blk.dtype), k_blk, (((2,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32
            )
            dk_blk = lax.dot_general(
                ds.astype(q_blk.dtype), q_blk, (((1,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32
            )  # [K, bk, H]
            at = (b, 0, k_start, 0)
            dk = lax.dynamic_update_slice(dk, lax.dynamic_slice(dk, at, (1, K, bk, H)) + dk_blk[None], at)
            dv = lax.dynamic_update_slice(dv, lax.dynamic_slice(dv, at, (1, K, bk, H)) + dv_blk[None], at)
            return dq_blk, dk, dv

        init = (jnp.zeros((K, G * bq, H), jnp.float32), dk, dv)
        dq_blk, dk, dv = lax.fori_loop(0, count[b, i], kv_step, init)
        dq_blk = (dq_blk * static.sm_scale).reshape(1, K, G, bq, H).astype(dq.dtype)
        dq = lax.dynamic_update_slice(dq, dq_blk, (b, 0, 0, q_start, 0))
        return dq, dk, dv

    zeros_kv = jnp.zeros(k.shape, jnp.float32)
    dq, dk, dv = lax.fori_loop(0, B * nq, q_block, (jnp.zeros(q.shape, q.dtype), zeros_kv, zeros_kv))
    return dq, (dk * static.sm_scale).astype(k.dtype), dv.astype(v.dtype)
