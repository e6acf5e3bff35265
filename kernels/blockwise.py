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

from kernels.block_mask import MaskSpec, block_visible
from kernels.block_sizes import MIN_BLOCK, round_up
from kernels.blockwise_loops import blockwise_backward, blockwise_forward
from kernels.flash import check_inputs
from kernels.per_shard import run_per_shard

DEFAULT_BLOCK = 256


@dataclasses.dataclass(frozen=True)
class BlockwiseStatic:
    """Everything static about one call (hashable: a custom_vjp nondiff argument)."""

    mask: MaskSpec
    sm_scale: float
    block_q: int
    block_k: int


def _block(name: str, b, length: int) -> int:
    if b is None:
        return min(DEFAULT_BLOCK, round_up(length, MIN_BLOCK))
    if not isinstance(b, int) or isinstance(b, bool) or b <= 0 or b % MIN_BLOCK:
        raise ValueError(f"{name}={b!r} must be a positive multiple of {MIN_BLOCK}")
    return b


def blockwise_attention(
    q_BTNH,
    k_BSKH,
    v_BSKH,
    *,
    causal: bool = True,
    q_segment_ids_BT=None,
    kv_segment_ids_BS=None,
    shared_prefix_segment: int | None = None,
    sm_scale: float | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    mesh=None,
    batch_axis: str | tuple[str, ...] | None = None,
    head_axis: str | None = None,
):
    """Attention with the semantics of `reference_attention`; returns out_BTNH (q's dtype).

    mesh/batch_axis/head_axis: as for `flash_attention`, run per shard of the batch and heads
    (the loops index rows and blocks, which XLA would otherwise gather to partition)."""
    check_inputs(q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS, shared_prefix_segment)
    local = functools.partial(
        _local,
        causal=causal,
        shared_prefix_segment=shared_prefix_segment,
        sm_scale=sm_scale,
        block_q=block_q,
        block_k=block_k,
    )
    args = (q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS)
    return run_per_shard(local, args, mesh=mesh, batch_axis=batch_axis, head_axis=head_axis)


def _local(
    q_BTNH,
    k_BSKH,
    v_BSKH,
    q_segment_ids_BT,
    kv_segment_ids_BS,
    *,
    causal,
    shared_prefix_segment,
    sm_scale,
    block_q,
    block_k,
):
    B, T, N, H = q_BTNH.shape
    S = k_BSKH.shape[1]
    static = BlockwiseStatic(
        mask=MaskSpec(
            causal=causal,
            q_len=T,
            kv_len=S,
            has_segments=q_segment_ids_BT is not None,
            shared_prefix_segment=shared_prefix_segment,
        ),
        sm_scale=float(H**-0.5 if sm_scale is None else sm_scale),
        block_q=_block("block_q", block_q, T),
        block_k=_block("block_k", block_k, S),
    )
    q, k, v, q_seg, kv_seg = _pad(static, q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS)
    sched = schedule(static, B, q_seg, kv_seg)
    out_BKGTH = _core(static, q, k, v, q_seg, kv_seg, *sched)
    out_BTKGH = out_BKGTH[:, :, :, :T].transpose(0, 3, 1, 2, 4)
    return out_BTKGH.reshape(B, T, N, H)


def _pad(static: BlockwiseStatic, q_BTNH, k_BSKH, v_BSKH, q_seg_BT, kv_seg_BS):
    """q -> [B, K, G, Tp, H]; k, v -> [B, K, Sp, H]; segment ids edge-padded to [B, Tp] / [B, Sp]
    (zeros without segments, unused by the masks)."""
    B, T, N, H = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    Tp, Sp = round_up(T, static.block_q), round_up(S, static.block_k)
    q = jnp.pad(q_BTNH, ((0, 0), (0, Tp - T), (0, 0), (0, 0)))
    q = q.reshape(B, Tp, K, N // K, H).transpose(0, 2, 3, 1, 4)
    k, v = (jnp.pad(x, ((0, 0), (0, Sp - S), (0, 0), (0, 0))).transpose(0, 2, 1, 3) for x in (k_BSKH, v_BSKH))
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
    ranges: tuple = (None, None)
    if static.mask.has_segments:
        qb = q_seg_BTp.reshape(B, nq, bq)
        kb = kv_seg_BSp.reshape(B, nk, bk)
        ranges = ((qb.min(-1)[:, :, None], qb.max(-1)[:, :, None]), (kb.min(-1)[:, None, :], kb.max(-1)[:, None, :]))
    vis = jnp.broadcast_to(block_visible(static.mask, q_start, k_start, bq, bk, *ranges), (B, nq, nk))
    order = jnp.argsort(~vis, axis=-1, stable=True).astype(jnp.int32)
    return order, vis.sum(-1).astype(jnp.int32)


# ----------------------------------------------------------------------------- custom_vjp
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _core(static, q, k, v, q_seg, kv_seg, order, count):
    return blockwise_forward(static, q, k, v, q_seg, kv_seg, order, count)[0]


def _core_fwd(static, q, k, v, q_seg, kv_seg, order, count):
    out, lse = blockwise_forward(static, q, k, v, q_seg, kv_seg, order, count)
    return out, (q, k, v, q_seg, kv_seg, order, count, out, lse)


def _core_bwd(static, res, do):
    q, k, v, q_seg, kv_seg, order, count, out, lse = res
    delta = jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32), axis=-1)
    dq, dk, dv = blockwise_backward(static, q, k, v, q_seg, kv_seg, order, count, do, lse, delta)
    return dq, dk, dv, None, None, None, None


_core.defvjp(_core_fwd, _core_bwd)
