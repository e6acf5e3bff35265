"""Compiled blockwise attention in plain jnp/lax: the CPU path and the portable fallback.

    out_BTNH = blockwise_attention(q_BTNH, k_BSKH, v_BSKH, causal=True,
                                   q_segment_ids_BT=seg, kv_segment_ids_BS=seg,
                                   shared_prefix_segment=1)

Same contract as `kernels.flash_attention` (the semantics of `kernels.reference`, f32 or bf16,
any length, GQA, the same departure for a query row with no visible key: output 0), but no
Pallas: XLA compiles it like any jnp program, so on CPU it runs as real matmuls instead of the
Pallas interpreter's per-program emulation. No [T, S] array exists at any point; memory is
O(T + (T / block_q) * (S / block_k)).

* Which blocks run: the (q block, kv block) visibility matrix `block_mask.block_visible` gives
  (causal position, per-block min/max segment ids; the same predicate the Pallas kernels use,
  exact for causal, packed documents and the GRPO `[prompt | resp_1 | .. | resp_G]` layout) is
  computed in XLA from the segment ids and compacted per q block into the list of its visible kv
  blocks (visible first, ascending) and their count. The kernel loops over q blocks and, for
  each, over exactly that many kv blocks (a while loop with a dynamic trip count): invisible
  blocks are never loaded or computed, whatever the (traced) layout.
* Forward: per q block, all N query heads at once as [K, G * block_q, H] against a kv block
  [K, block_k, H] (GQA: the G query heads of a kv head are rows of one matmul, K/V are never
  repeated), online softmax in f32, output and row log-sum-exp written per q block.
* Backward (custom VJP): delta = rowsum(o * do), then ONE loop over the same visible pairs
  that recomputes p from the saved log-sum-exp and accumulates dq for the q block in the loop
  carry and dk/dv into [B, K, S, H] f32 buffers (dynamic-update-slice, in place), so each pair
  costs 5 matmuls (FlashAttention-2's split dq / dk-dv kernels recompute q k^T twice: 7).

Block sizes: CPU wants large blocks (fewer loop trips, bigger matmuls); `DEFAULT_BLOCK` is what
measured fastest on this project's CPU (docs/benchmarks.md), shrunk to the sequence length.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from kernels.block_mask import MaskSpec, block_visible, element_mask
from kernels.flash import check_inputs, run_per_shard
from kernels.reference import MASK_VALUE

DEFAULT_BLOCK = 256
MIN_BLOCK = 8


@dataclasses.dataclass(frozen=True)
class BlockwiseStatic:
    """Everything static about one call (hashable: a custom_vjp nondiff argument)."""

    mask: MaskSpec
    sm_scale: float
    block_q: int
    block_k: int


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _block(name: str, b, length: int) -> int:
    if b is None:
        return min(DEFAULT_BLOCK, _round_up(length, MIN_BLOCK))
    if not isinstance(b, int) or isinstance(b, bool) or b <= 0 or b % MIN_BLOCK:
        raise ValueError(f"{name}={b!r} must be a positive multiple of {MIN_BLOCK}")
    return b


def blockwise_attention(q_BTNH, k_BSKH, v_BSKH, *, causal: bool = True, q_segment_ids_BT=None,
                        kv_segment_ids_BS=None, shared_prefix_segment: int | None = None,
                        sm_scale: float | None = None, block_q: int | None = None,
                        block_k: int | None = None, mesh=None,
                        batch_axis: str | tuple[str, ...] | None = None,
                        head_axis: str | None = None):
    """Attention with the semantics of `reference_attention`; returns out_BTNH (q's dtype).

    mesh/batch_axis/head_axis: as for `flash_attention`, run per shard of the batch and heads
    (the loops index rows and blocks, which XLA would otherwise gather to partition)."""
    check_inputs(q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS,
                 shared_prefix_segment)
    local = functools.partial(_local, causal=causal, shared_prefix_segment=shared_prefix_segment,
                              sm_scale=sm_scale, block_q=block_q, block_k=block_k)
    args = (q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS)
    return run_per_shard(local, args, mesh=mesh, batch_axis=batch_axis, head_axis=head_axis)


def _local(q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS, *, causal,
           shared_prefix_segment, sm_scale, block_q, block_k):
    B, T, N, H = q_BTNH.shape
    S = k_BSKH.shape[1]
    static = BlockwiseStatic(
        mask=MaskSpec(causal=causal, q_len=T, kv_len=S, has_segments=q_segment_ids_BT is not None,
                      shared_prefix_segment=shared_prefix_segment),
        sm_scale=float(H**-0.5 if sm_scale is None else sm_scale),
        block_q=_block("block_q", block_q, T), block_k=_block("block_k", block_k, S))
    q, k, v, q_seg, kv_seg = _pad(static, q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT,
                                  kv_segment_ids_BS)
    sched = schedule(static, B, q_seg, kv_seg)
    out_BKGTH = _core(static, q, k, v, q_seg, kv_seg, *sched)
    out_BTKGH = out_BKGTH[:, :, :, :T].transpose(0, 3, 1, 2, 4)
    return out_BTKGH.reshape(B, T, N, H)


def _pad(static: BlockwiseStatic, q_BTNH, k_BSKH, v_BSKH, q_seg_BT, kv_seg_BS):
    """q -> [B, K, G, Tp, H]; k, v -> [B, K, Sp, H]; segment ids edge-padded to [B, Tp] / [B, Sp]
    (zeros without segments, unused by the masks)."""
    B, T, N, H = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    Tp, Sp = _round_up(T, static.block_q), _round_up(S, static.block_k)
    q = jnp.pad(q_BTNH, ((0, 0), (0, Tp - T), (0, 0), (0, 0)))
    q = q.reshape(B, Tp, K, N // K, H).transpose(0, 2, 3, 1, 4)
    k, v = (jnp.pad(x, ((0, 0), (0, Sp - S), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
            for x in (k_BSKH, v_BSKH))
    if q_seg_BT is None:
        return q, k, v, jnp.zeros((B, Tp), jnp.int32), jnp.zeros((B, Sp), jnp.int32)
    q_seg = jnp.pad(q_seg_BT.astype(jnp.int32), ((0, 0), (0, Tp - T)), mode="edge")
    kv_seg = jnp.pad(kv_seg_BS.astype(jnp.int32), ((0, 0), (0, Sp - S)), mode="edge")
    return q, k, v, q_seg, kv_seg


def schedule(static: BlockwiseStatic, B: int, q_seg_BTp, kv_seg_BSp):
    """(kv block order [B, nq, nk] int32, visible count [B, nq] int32): for each q block, its
    visible kv blocks first in ascending order, then the rest; the kernel runs the first
    `count` of them."""
    bq, bk = static.block_q, static.block_k
    nq, nk = q_seg_BTp.shape[1] // bq, kv_seg_BSp.shape[1] // bk
    q_start = (jnp.arange(nq, dtype=jnp.int32) * bq)[None, :, None]
    k_start = (jnp.arange(nk, dtype=jnp.int32) * bk)[None, None, :]
    ranges = (None, None)
    if static.mask.has_segments:
        qb = q_seg_BTp.reshape(B, nq, bq)
        kb = kv_seg_BSp.reshape(B, nk, bk)
        ranges = ((qb.min(-1)[:, :, None], qb.max(-1)[:, :, None]),
                  (kb.min(-1)[:, None, :], kb.max(-1)[:, None, :]))
    vis = jnp.broadcast_to(block_visible(static.mask, q_start, k_start, bq, bk, *ranges),
                           (B, nq, nk))
    order = jnp.argsort(~vis, axis=-1, stable=True).astype(jnp.int32)
    return order, vis.sum(-1).astype(jnp.int32)


# ----------------------------------------------------------------------------- block math
def _scores_mask(static, q_KMH, k_KbH, q_seg_b, kv_seg_b, q_start, k_start):
    """Scaled masked scores [K, G, bq, bk] (f32) and the element mask [bq, bk]."""
    bq, bk = static.block_q, static.block_k
    K, M, H = q_KMH.shape
    s = lax.dot_general(q_KMH, k_KbH, (((2,), (2,)), ((0,), (0,))),
                        preferred_element_type=jnp.float32)  # [K, G*bq, bk]
    s = s.reshape(K, M // bq, bq, bk) * static.sm_scale
    q_pos = q_start + lax.broadcasted_iota(jnp.int32, (bq, 1), 0)
    k_pos = k_start + lax.broadcasted_iota(jnp.int32, (1, bk), 1)
    q_seg = k_seg = None
    if static.mask.has_segments:
        q_seg = lax.dynamic_slice_in_dim(q_seg_b, q_start, bq)[:, None]
        k_seg = lax.dynamic_slice_in_dim(kv_seg_b, k_start, bk)[None, :]
    mask = element_mask(static.mask, q_pos, k_pos, q_seg, k_seg,
                        kv_padded=static.mask.kv_len % bk != 0)
    return jnp.where(mask, s, MASK_VALUE), mask


def _q_block(x_BKGTH, b, q_start, bq):
    """[K, G * bq, H] block of q-shaped x at batch row b."""
    B, K, G, Tp, H = x_BKGTH.shape
    blk = lax.dynamic_slice(x_BKGTH, (b, 0, 0, q_start, 0), (1, K, G, bq, H))
    return blk.reshape(K, G * bq, H)


def _kv_block(x_BKSH, b, k_start, bk):
    B, K, Sp, H = x_BKSH.shape
    return lax.dynamic_slice(x_BKSH, (b, 0, k_start, 0), (1, K, bk, H))[0]


def _forward(static, q, k, v, q_seg, kv_seg, order, count):
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
            pv = lax.dot_general(p.reshape(K, G * bq, bk).astype(v_blk.dtype), v_blk,
                                 (((2,), (1,)), ((0,), (0,))),
                                 preferred_element_type=jnp.float32)
            acc = alpha * acc + pv.reshape(K, G, bq, H)
            return acc, m_new, alpha * l + p.sum(-1, keepdims=True)

        init = (jnp.zeros((K, G, bq, H), jnp.float32),
                jnp.full((K, G, bq, 1), MASK_VALUE, jnp.float32),
                jnp.zeros((K, G, bq, 1), jnp.float32))
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


def _backward(static, q, k, v, q_seg, kv_seg, order, count, do, lse, delta):
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
            dv_blk = lax.dot_general(p_KMb.astype(do_blk.dtype), do_blk,
                                     (((1,), (1,)), ((0,), (0,))),
                                     preferred_element_type=jnp.float32)  # [K, bk, H]
            dp = lax.dot_general(do_blk, v_blk, (((2,), (2,)), ((0,), (0,))),
                                 preferred_element_type=jnp.float32).reshape(K, G, bq, bk)
            ds = (p * (dp - delta_blk)).reshape(K, G * bq, bk)
            dq_blk = dq_blk + lax.dot_general(ds.astype(k_blk.dtype), k_blk,
                                              (((2,), (1,)), ((0,), (0,))),
                                              preferred_element_type=jnp.float32)
            dk_blk = lax.dot_general(ds.astype(q_blk.dtype), q_blk,
                                     (((1,), (1,)), ((0,), (0,))),
                                     preferred_element_type=jnp.float32)  # [K, bk, H]
            at = (b, 0, k_start, 0)
            dk = lax.dynamic_update_slice(
                dk, lax.dynamic_slice(dk, at, (1, K, bk, H)) + dk_blk[None], at)
            dv = lax.dynamic_update_slice(
                dv, lax.dynamic_slice(dv, at, (1, K, bk, H)) + dv_blk[None], at)
            return dq_blk, dk, dv

        init = (jnp.zeros((K, G * bq, H), jnp.float32), dk, dv)
        dq_blk, dk, dv = lax.fori_loop(0, count[b, i], kv_step, init)
        dq_blk = (dq_blk * static.sm_scale).reshape(1, K, G, bq, H).astype(dq.dtype)
        dq = lax.dynamic_update_slice(dq, dq_blk, (b, 0, 0, q_start, 0))
        return dq, dk, dv

    zeros_kv = jnp.zeros(k.shape, jnp.float32)
    dq, dk, dv = lax.fori_loop(0, B * nq, q_block, (jnp.zeros(q.shape, q.dtype), zeros_kv,
                                                     zeros_kv))
    return dq, (dk * static.sm_scale).astype(k.dtype), dv.astype(v.dtype)


# ----------------------------------------------------------------------------- custom_vjp
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _core(static, q, k, v, q_seg, kv_seg, order, count):
    return _forward(static, q, k, v, q_seg, kv_seg, order, count)[0]


def _core_fwd(static, q, k, v, q_seg, kv_seg, order, count):
    out, lse = _forward(static, q, k, v, q_seg, kv_seg, order, count)
    return out, (q, k, v, q_seg, kv_seg, order, count, out, lse)


def _core_bwd(static, res, do):
    q, k, v, q_seg, kv_seg, order, count, out, lse = res
    delta = jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32), axis=-1)
    dq, dk, dv = _backward(static, q, k, v, q_seg, kv_seg, order, count, do, lse, delta)
    return dq, dk, dv, None, None, None, None


_core.defvjp(_core_fwd, _core_bwd)
