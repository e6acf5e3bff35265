"""Bodies of the "loop" flash kernels (kernels/flash_loop.py): forward, dq, dk/dv.

Fully masked blocks are skipped: the kv (or q) loop bounds follow causality, and inside the loop
a block-level predicate (`block_mask.block_visible`: causal position and per-block min/max
segment ids) guards the block with `lax.cond`, so skipped blocks load nothing and do no matmuls.
Scores, softmax statistics and accumulators are f32; p is cast to v's dtype for the p@v matmul.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.block_mask import block_visible, element_mask
from kernels.block_sizes import FlashStatic
from kernels.kernel_math import dot, dot_nt, dot_tn
from kernels.reference import MASK_VALUE


def _column(n: int, start):  # [n, 1] positions
    return start + lax.broadcasted_iota(jnp.int32, (n, 1), 0)


def _row(n: int, start):  # [1, n] positions
    return start + lax.broadcasted_iota(jnp.int32, (1, n), 1)


def _seg_range(seg):
    return None if seg is None else (jnp.min(seg), jnp.max(seg))


def _kv_padded(static: FlashStatic) -> bool:
    return static.mask.kv_len % static.block_k != 0


def _kv_block_hi(static: FlashStatic, q_start, num_kv_blocks: int):
    """One past the last kv block a q block starting at q_start can see (causal bound)."""
    if not static.mask.causal:
        return num_kv_blocks
    last_key = q_start + static.block_q + static.mask.causal_offset  # exclusive
    return jnp.clip(lax.div(jnp.maximum(last_key, 0) + static.block_k - 1, static.block_k), 0, num_kv_blocks)


def _q_block_lo(static: FlashStatic, k_start):
    """First q block that can see a kv block starting at k_start (causal bound)."""
    if not static.mask.causal:
        return 0
    return lax.div(jnp.maximum(k_start - static.mask.causal_offset, 0), static.block_q)


def _masked_scores(static, q, k, q_pos, k_pos, q_seg, k_seg):
    s = dot_nt(q, k) * static.sm_scale
    mask = element_mask(static.mask, q_pos, k_pos, q_seg, k_seg, kv_padded=_kv_padded(static))
    return jnp.where(mask, s, MASK_VALUE), mask


# Row statistics (m, l, lse, delta) are [rows, 1] columns and segment ids are a [bq, 1] column
# against a [1, bk] row, so every value in the kernels is 2-D (Mosaic's native layout).
def fwd_kernel(q_ref, k_ref, v_ref, q_seg_ref, kv_seg_ref, o_ref, lse_ref, *count_ref, static):
    bq, bk = static.block_q, static.block_k
    q_start = pl.program_id(2) * bq
    q = q_ref[...]
    q_pos = _column(bq, q_start)
    q_seg = None if q_seg_ref is None else q_seg_ref[...]
    q_range = _seg_range(q_seg)

    def body(j, carry):
        k_start = j * bk
        k_slice = pl.ds(pl.multiple_of(k_start, bk), bk)
        k_seg = None if kv_seg_ref is None else kv_seg_ref[:, k_slice]
        visible = block_visible(static.mask, q_start, k_start, bq, bk, q_range, _seg_range(k_seg))

        def compute(carry):
            acc, m, l, n = carry
            v = v_ref[k_slice, :]
            s, mask = _masked_scores(static, q, k_ref[k_slice, :], q_pos, _row(bk, k_start), q_seg, k_seg)
            m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
            p = jnp.where(mask, jnp.exp(s - m_new), 0.0)
            alpha = jnp.exp(m - m_new)
            acc = alpha * acc + dot(p.astype(v.dtype), v)
            return acc, m_new, alpha * l + jnp.sum(p, axis=1, keepdims=True), n + 1

        return lax.cond(visible, compute, lambda c: c, carry)

    H = q.shape[-1]
    init = (
        jnp.zeros((bq, H), jnp.float32),
        jnp.full((bq, 1), MASK_VALUE, jnp.float32),
        jnp.zeros((bq, 1), jnp.float32),
        jnp.int32(0),
    )
    hi = _kv_block_hi(static, q_start, k_ref.shape[0] // bk)
    acc, m, l, n = lax.fori_loop(0, hi, body, init)
    empty = l == 0.0  # no visible key in any computed block
    l_safe = jnp.where(empty, 1.0, l)
    o_ref[...] = (acc / l_safe).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, MASK_VALUE, m + jnp.log(l_safe))
    if count_ref:
        count_ref[0][...] = jnp.full((bq, 1), n, jnp.int32)


def dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, q_seg_ref, kv_seg_ref, dq_ref, *, static):
    bq, bk = static.block_q, static.block_k
    q_start = pl.program_id(2) * bq
    q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
    q_pos = _column(bq, q_start)
    q_seg = None if q_seg_ref is None else q_seg_ref[...]
    q_range = _seg_range(q_seg)

    def body(j, dq):
        k_start = j * bk
        k_slice = pl.ds(pl.multiple_of(k_start, bk), bk)
        k_seg = None if kv_seg_ref is None else kv_seg_ref[:, k_slice]
        visible = block_visible(static.mask, q_start, k_start, bq, bk, q_range, _seg_range(k_seg))

        def compute(dq):
            k, v = k_ref[k_slice, :], v_ref[k_slice, :]
            s, mask = _masked_scores(static, q, k, q_pos, _row(bk, k_start), q_seg, k_seg)
            p = jnp.where(mask, jnp.exp(s - lse), 0.0)
            ds = p * (dot_nt(do, v) - delta)
            return dq + dot(ds.astype(k.dtype), k)

        return lax.cond(visible, compute, lambda d: d, dq)

    hi = _kv_block_hi(static, q_start, k_ref.shape[0] // bk)
    dq = lax.fori_loop(0, hi, body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * static.sm_scale).astype(dq_ref.dtype)


def dkdv_kernel(
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, q_seg_ref, kv_seg_ref, dk_ref, dv_ref, *, static, group
):
    bq, bk = static.block_q, static.block_k
    k_start = pl.program_id(2) * bk
    k, v = k_ref[...], v_ref[...]
    k_pos = _row(bk, k_start)
    k_seg = None if kv_seg_ref is None else kv_seg_ref[...]
    k_range = _seg_range(k_seg)

    def body(i, carry):
        q_start = i * bq
        q_slice = pl.ds(pl.multiple_of(q_start, bq), bq)
        q_seg = None if q_seg_ref is None else q_seg_ref[q_slice, :]
        visible = block_visible(static.mask, q_start, k_start, bq, bk, _seg_range(q_seg), k_range)

        def compute(carry):
            mask = element_mask(static.mask, _column(bq, q_start), k_pos, q_seg, k_seg, kv_padded=_kv_padded(static))

            def head(g, carry):  # the query heads sharing this kv head
                dk, dv = carry
                q, do = q_ref[g, q_slice, :], do_ref[g, q_slice, :]
                lse, delta = lse_ref[g, q_slice, :], delta_ref[g, q_slice, :]
                s = jnp.where(mask, dot_nt(q, k) * static.sm_scale, MASK_VALUE)
                p = jnp.where(mask, jnp.exp(s - lse), 0.0)
                dv = dv + dot_tn(p.astype(do.dtype), do)
                ds = p * (dot_nt(do, v) - delta)
                return dk + dot_tn(ds.astype(q.dtype), q), dv

            return lax.fori_loop(0, group, head, carry)

        return lax.cond(visible, compute, lambda c: c, carry)

    zeros = jnp.zeros(k.shape, jnp.float32)
    lo = _q_block_lo(static, k_start)
    dk, dv = lax.fori_loop(lo, q_ref.shape[1] // bq, body, (zeros, zeros))
    dk_ref[...] = (dk * static.sm_scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)
