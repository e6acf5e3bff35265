"""Which blocks the TPU grid kernels visit: block visibility summarised as at most two runs.

Outside the kernel (XLA, cheap) the block visibility matrix is computed from per-block min/max
segment ids and causality (`block_mask.block_visible`, the same predicate as the loop kernels)
and summarised per row of blocks as at most two runs of consecutive blocks (`block_runs`). Those
runs and the per-block segment ranges are scalar-prefetched (SMEM, O(number of blocks)); the
index maps visit only blocks inside the runs and repeat the last visited block afterwards
(`visited_block`; Pallas does not re-fetch an unchanged block), and the kernels skip the compute
of blocks that `visible_at` says are invisible. Two runs are exact for causal masks, packed
documents and the GRPO `[prompt | resp_1 | .. | resp_G]` layout (prompt blocks plus the
response's own blocks); for other layouts they are a superset.
"""

from __future__ import annotations

import jax.numpy as jnp

from kernels.block_mask import block_visible


def block_ranges(seg_BL, block: int):
    """Per-block (min, max) segment id [B, L // block] of padded ids [B, L] (zeros if None)."""
    B, L = seg_BL.shape
    blocks = seg_BL.reshape(B, L // block, block)
    return jnp.min(blocks, axis=-1), jnp.max(blocks, axis=-1)


def visibility(static, B: int, nq: int, nk: int, q_seg_BT=None, kv_seg_BS=None):
    """[B, nq, nk] bool: can any pair of (q block i, kv block j) be visible."""
    bq, bk = static.block_q, static.block_k
    q_start = (jnp.arange(nq, dtype=jnp.int32) * bq)[None, :, None]
    k_start = (jnp.arange(nk, dtype=jnp.int32) * bk)[None, None, :]
    ranges: tuple = (None, None)
    if static.mask.has_segments:
        q_min, q_max = block_ranges(q_seg_BT, bq)
        k_min, k_max = block_ranges(kv_seg_BS, bk)
        ranges = ((q_min[:, :, None], q_max[:, :, None]), (k_min[:, None, :], k_max[:, None, :]))
    vis = block_visible(static.mask, q_start, k_start, bq, bk, *ranges)
    return jnp.broadcast_to(vis, (B, nq, nk))


def block_runs(vis_BRn):
    """At most two runs [lo, lo + len) of consecutive blocks covering every True of each row.

    Returns int32 [B, R] arrays (lo1, len1, lo2, len2). Exact when a row has at most two runs of
    True; otherwise the second run spans from the second run's start to the last True."""
    n = vis_BRn.shape[-1]
    idx = jnp.arange(n, dtype=jnp.int32).reshape((1,) * (vis_BRn.ndim - 1) + (n,))
    any_ = jnp.any(vis_BRn, axis=-1)
    first = jnp.argmax(vis_BRn, axis=-1).astype(jnp.int32)
    gap = (~vis_BRn) & (idx > first[..., None])
    end1 = jnp.where(jnp.any(gap, axis=-1), jnp.argmax(gap, axis=-1), n).astype(jnp.int32)
    len1 = jnp.where(any_, end1 - first, 0)
    rest = vis_BRn & (idx >= end1[..., None])
    lo2 = jnp.argmax(rest, axis=-1).astype(jnp.int32)
    last = (n - 1 - jnp.argmax(vis_BRn[..., ::-1], axis=-1)).astype(jnp.int32)
    len2 = jnp.where(jnp.any(rest, axis=-1), last + 1 - lo2, 0)
    return first, len1.astype(jnp.int32), lo2, len2.astype(jnp.int32)


def visited_block(runs, row, t):
    """Block visited at step t of a row: inside the runs, else the last block of the runs."""
    lo1, len1, lo2, len2 = (r[row] for r in runs)
    total = len1 + len2
    last = jnp.where(len2 > 0, lo2 + len2 - 1, jnp.where(len1 > 0, lo1 + len1 - 1, 0))
    blk = jnp.where(t < len1, lo1 + t, jnp.where(t < total, lo2 + t - len1, last))
    return blk, t < total


def prefetch_runs(static, B, nq, nk, q_seg, kv_seg, transpose: bool):
    """Scalar-prefetch operands: flat per-block segment ranges and the block runs."""
    vis = visibility(static, B, nq, nk, q_seg, kv_seg)
    if transpose:
        vis = jnp.swapaxes(vis, 1, 2)
    runs = [r.reshape(-1) for r in block_runs(vis)]
    if static.mask.has_segments:
        q_min, q_max = block_ranges(q_seg, static.block_q)
        k_min, k_max = block_ranges(kv_seg, static.block_k)
    else:
        q_min = q_max = jnp.zeros((B, nq), jnp.int32)
        k_min = k_max = jnp.zeros((B, nk), jnp.int32)
    return [x.reshape(-1).astype(jnp.int32) for x in (q_min, q_max, k_min, k_max)] + runs


def visible_at(static, q_start, k_start, b, i, j, nq, nk, qmin, qmax, kmin, kmax):
    ranges: tuple = (None, None)
    if static.mask.has_segments:
        ranges = ((qmin[b * nq + i], qmax[b * nq + i]), (kmin[b * nk + j], kmax[b * nk + j]))
    return block_visible(static.mask, q_start, k_start, static.block_q, static.block_k, *ranges)
