"""Flash attention forward/backward shaped for Mosaic (TPU): a grid over kv blocks.

Same semantics and padded interface as `kernels/flash.py`'s `flash_forward` / `flash_backward`
(which dispatch here when the kernel is "grid", the default when the compile target is a TPU).
The loop kernels there keep whole sequences of K/V (or Q, dO, lse, delta) resident per program;
on TPU those windows live in VMEM (64 MiB on v5p), so they fail beyond a few thousand tokens.
Here every on-chip buffer is bounded by the block sizes, whatever the sequence length:

* Grid (batch, head, block, step): the last axis walks the blocks of the other side ("arbitrary"
  semantics) and the running statistics/accumulators live in VMEM scratch, written to the
  output block at the last step (as jax's `pallas/ops/tpu/flash_attention.py` and splash do).
* Log-sum-exp and delta are stored as rows [B, N, 1, T] (lane-dense; a [.., T, 1] column pads
  every element to 128 lanes). The backward kernels compute transposed scores s^T = k q^T
  [bk, bq] so that those rows broadcast without a transpose; the forward transposes its [bq, 1]
  statistics once per q block when it writes them.
* Fully masked blocks are neither fetched nor computed. Outside the kernel (XLA, cheap) the
  block visibility matrix is computed from per-block min/max segment ids and causality
  (`block_mask.block_visible`, the same predicate as the loop kernels) and summarised per row
  of blocks as at most two runs of consecutive blocks (`block_runs`). Those runs and the
  per-block segment ranges are scalar-prefetched (SMEM, O(number of blocks)); the index maps
  visit only blocks inside the runs and repeat the last visited block afterwards (Pallas does
  not re-fetch an unchanged block), and `pl.when` skips the compute. Two runs are exact for
  causal masks, packed documents and the GRPO `[prompt | resp_1 | .. | resp_G]` layout (prompt
  blocks plus the response's own blocks); for other layouts they are a superset, and blocks in
  it that are invisible are fetched but not computed. Splash attention instead prefetches a
  per-(q block, kv block) `data_next` table, O(nq * nk) of SMEM, which outgrows SMEM at 128K
  tokens with 128-token blocks; runs are O(nq).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.block_mask import block_visible, element_mask
from kernels.kernel_math import mosaic_dot, mosaic_dot_nt, mosaic_dot_tn
from kernels.reference import MASK_VALUE

LANES = 128


# ----------------------------------------------------------------------------- block runs
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
    ranges = (None, None)
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


def _visited_block(runs, row, t):
    """Block visited at step t of a row: inside the runs, else the last block of the runs."""
    lo1, len1, lo2, len2 = (r[row] for r in runs)
    total = len1 + len2
    last = jnp.where(len2 > 0, lo2 + len2 - 1, jnp.where(len1 > 0, lo1 + len1 - 1, 0))
    blk = jnp.where(t < len1, lo1 + t, jnp.where(t < total, lo2 + t - len1, last))
    return blk, t < total


def _prefetch(static, B, nq, nk, q_seg, kv_seg, transpose: bool):
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


def _visible(static, q_start, k_start, b, i, j, nq, nk, qmin, qmax, kmin, kmax):
    ranges = (None, None)
    if static.mask.has_segments:
        ranges = ((qmin[b * nq + i], qmax[b * nq + i]), (kmin[b * nk + j], kmax[b * nk + j]))
    return block_visible(static.mask, q_start, k_start, static.block_q, static.block_k, *ranges)


def _params(interpret: bool):
    if interpret:
        return None
    from jax.experimental.pallas import tpu as pltpu
    return pltpu.CompilerParams(
        dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))


def _out(shape, dtype, like):
    return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=jax.typeof(like).mat)










def _positions(n: int, start, axis: int):
    shape = (n, 1) if axis == 0 else (1, n)
    return start + lax.broadcasted_iota(jnp.int32, shape, axis)


def _kv_padded(static) -> bool:
    return static.mask.kv_len % static.block_k != 0


def _mask_t(static, q_start, k_start, q_seg_row, kv_seg_col):
    """Transposed element mask [bk, bq] (keys on sublanes, queries on lanes)."""
    bq, bk = static.block_q, static.block_k
    return element_mask(static.mask, _positions(bq, q_start, 1), _positions(bk, k_start, 0),
                        q_seg_row, kv_seg_col, kv_padded=_kv_padded(static), shape=(bk, bq))


def _seg_layouts(static, q_seg_BT1, kv_seg_B1S):
    """Segment ids in both layouts the kernels read: q as column/row, kv as row/column."""
    if not static.mask.has_segments:
        return None, None, None, None
    B = q_seg_BT1.shape[0]
    return (q_seg_BT1, q_seg_BT1.reshape(B, 1, -1), kv_seg_B1S, kv_seg_B1S.reshape(B, -1, 1))


# ----------------------------------------------------------------------------- forward
def flash_forward_grid(static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT1, kv_seg_B1S):
    """(out_BNTH, lse_BNT1) of padded inputs (layouts as `flash.pad_inputs` returns them)."""
    B, N, Tp, H = q_BNTH.shape
    K, Sp = k_BKSH.shape[1], k_BKSH.shape[2]
    G, bq, bk = N // K, static.block_q, static.block_k
    nq, nk = Tp // bq, Sp // bk
    seg = static.mask.has_segments
    q_col, _, kv_row, _ = _seg_layouts(static, q_seg_BT1, kv_seg_B1S)
    prefetch = _prefetch(static, B, nq, nk, q_seg_BT1[..., 0] if seg else None,
                         kv_seg_B1S[:, 0] if seg else None, transpose=False)

    def kv_index(b, n, i, t, *refs):
        j, _ = _visited_block(refs[4:], b * nq + i, t)
        return b, lax.div(n, G), j, 0

    def kv_seg_index(b, n, i, t, *refs):
        return b, 0, _visited_block(refs[4:], b * nq + i, t)[0]

    q_spec = pl.BlockSpec((None, None, bq, H), lambda b, n, i, t, *_: (b, n, i, 0))
    kv_spec = pl.BlockSpec((None, None, bk, H), kv_index)
    in_specs = [q_spec, kv_spec, kv_spec]
    args = [q_BNTH, k_BKSH, v_BKSH]
    if seg:
        in_specs += [pl.BlockSpec((None, bq, 1), lambda b, n, i, t, *_: (b, i, 0)),
                     pl.BlockSpec((None, 1, bk), kv_seg_index)]
        args += [q_col, kv_row]
    from jax.experimental.pallas import tpu as pltpu
    spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=len(prefetch), grid=(B, N, nq, nk), in_specs=in_specs,
        out_specs=[q_spec, pl.BlockSpec((None, None, 1, bq), lambda b, n, i, t, *_: (b, n, 0, i))],
        scratch_shapes=[pltpu.VMEM((bq, 1), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32),
                        pltpu.VMEM((bq, H), jnp.float32)])
    out, lse_row = pl.pallas_call(
        functools.partial(_fwd_kernel, static=static, nq=nq, nk=nk, seg=seg),
        grid_spec=spec,
        out_shape=[_out(q_BNTH.shape, q_BNTH.dtype, q_BNTH),
                   _out((B, N, 1, Tp), jnp.float32, q_BNTH)],
        interpret=static.interpret, name="flash_attention_fwd",
        compiler_params=_params(static.interpret),
    )(*prefetch, *args)
    return out, lse_row.reshape(B, N, Tp, 1)


def _fwd_kernel(qmin, qmax, kmin, kmax, lo1, len1, lo2, len2, q_ref, k_ref, v_ref, *rest,
                static, nq, nk, seg):
    if seg:
        q_seg_ref, kv_seg_ref, o_ref, lse_ref, m_sc, l_sc, acc_sc = rest
    else:
        q_seg_ref = kv_seg_ref = None
        o_ref, lse_ref, m_sc, l_sc, acc_sc = rest
    bq, bk = static.block_q, static.block_k
    b, i, t = pl.program_id(0), pl.program_id(2), pl.program_id(3)

    @pl.when(t == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, MASK_VALUE, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    j, in_runs = _visited_block((lo1, len1, lo2, len2), b * nq + i, t)
    q_start, k_start = i * bq, j * bk
    visible = in_runs & _visible(static, q_start, k_start, b, i, j, nq, nk, qmin, qmax, kmin,
                                 kmax)

    @pl.when(visible)
    def _compute():
        q, k, v = q_ref[...], k_ref[...], v_ref[...]
        q_seg = None if q_seg_ref is None else q_seg_ref[...]
        k_seg = None if kv_seg_ref is None else kv_seg_ref[...]
        mask = element_mask(static.mask, _positions(bq, q_start, 0), _positions(bk, k_start, 1),
                            q_seg, k_seg, kv_padded=_kv_padded(static))
        s = jnp.where(mask, mosaic_dot_nt(q, k) * static.sm_scale, MASK_VALUE)
        m = m_sc[...]
        m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
        p = jnp.where(mask, jnp.exp(s - m_new), 0.0)
        alpha = jnp.exp(m - m_new)
        acc_sc[...] = alpha * acc_sc[...] + mosaic_dot(p.astype(v.dtype), v)
        l_sc[...] = alpha * l_sc[...] + jnp.sum(p, axis=1, keepdims=True)
        m_sc[...] = m_new

    @pl.when(t == nk - 1)
    def _finish():
        l = l_sc[...]
        empty = l == 0.0
        l_safe = jnp.where(empty, 1.0, l)
        o_ref[...] = (acc_sc[...] / l_safe).astype(o_ref.dtype)
        lse_col = jnp.where(empty, MASK_VALUE, m_sc[...] + jnp.log(l_safe))  # [bq, 1]
        lse_ref[...] = _column_to_row(lse_col)


def _column_to_row(x_col):
    """[n, 1] -> [1, n] through an aligned [n, 128] transpose (what Mosaic transposes)."""
    n = x_col.shape[0]
    return jnp.transpose(jnp.broadcast_to(x_col, (n, LANES)))[:1, :]


# ----------------------------------------------------------------------------- backward
def flash_backward_grid(static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT1, kv_seg_B1S, do_BNTH,
                        lse_BNT1, delta_BNT1, grad_dtype=None):
    """(dq, dk, dv) of padded inputs; lse/delta given as [B, N, Tp, 1] (stored as rows)."""
    B, N, Tp, H = q_BNTH.shape
    K, Sp = k_BKSH.shape[1], k_BKSH.shape[2]
    G, bq, bk = N // K, static.block_q, static.block_k
    nq, nk = Tp // bq, Sp // bk
    seg = static.mask.has_segments
    _, q_row, _, kv_col = _seg_layouts(static, q_seg_BT1, kv_seg_B1S)
    lse_row, delta_row = lse_BNT1.reshape(B, N, 1, Tp), delta_BNT1.reshape(B, N, 1, Tp)
    q_ids = q_seg_BT1[..., 0] if seg else None
    kv_ids = kv_seg_B1S[:, 0] if seg else None
    from jax.experimental.pallas import tpu as pltpu

    # dq: grid (b, n, q block i, step over kv blocks), like the forward.
    pre_q = _prefetch(static, B, nq, nk, q_ids, kv_ids, transpose=False)

    def kv_index(b, n, i, t, *refs):
        return b, lax.div(n, G), _visited_block(refs[4:], b * nq + i, t)[0], 0

    def kv_seg_index(b, n, i, t, *refs):
        return b, _visited_block(refs[4:], b * nq + i, t)[0], 0

    q_spec = pl.BlockSpec((None, None, bq, H), lambda b, n, i, t, *_: (b, n, i, 0))
    row_spec = pl.BlockSpec((None, None, 1, bq), lambda b, n, i, t, *_: (b, n, 0, i))
    kv_spec = pl.BlockSpec((None, None, bk, H), kv_index)
    in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec]
    args = [q_BNTH, k_BKSH, v_BKSH, do_BNTH, lse_row, delta_row]
    if seg:
        in_specs += [pl.BlockSpec((None, 1, bq), lambda b, n, i, t, *_: (b, 0, i)),
                     pl.BlockSpec((None, bk, 1), kv_seg_index)]
        args += [q_row, kv_col]
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, static=static, nq=nq, nk=nk, seg=seg),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=len(pre_q), grid=(B, N, nq, nk), in_specs=in_specs,
            out_specs=q_spec, scratch_shapes=[pltpu.VMEM((bq, H), jnp.float32)]),
        out_shape=_out(q_BNTH.shape, grad_dtype or q_BNTH.dtype, q_BNTH),
        interpret=static.interpret, name="flash_attention_dq",
        compiler_params=_params(static.interpret),
    )(*pre_q, *args)

    # dk/dv: grid (b, kv head h, kv block j, step over (query head of the group, q block)).
    pre_k = _prefetch(static, B, nq, nk, q_ids, kv_ids, transpose=True)

    def q_index(b, h, j, s, *refs):
        g, t = lax.div(s, nq), lax.rem(s, nq)
        return b, h * G + g, _visited_block(refs[4:], b * nk + j, t)[0], 0

    def q_row_index(b, h, j, s, *refs):
        g, t = lax.div(s, nq), lax.rem(s, nq)
        return b, h * G + g, 0, _visited_block(refs[4:], b * nk + j, t)[0]

    def q_seg_index(b, h, j, s, *refs):
        return b, 0, _visited_block(refs[4:], b * nk + j, lax.rem(s, nq))[0]

    kv_blk = pl.BlockSpec((None, None, bk, H), lambda b, h, j, s, *_: (b, h, j, 0))
    q_blk = pl.BlockSpec((None, None, bq, H), q_index)
    rows = pl.BlockSpec((None, None, 1, bq), q_row_index)
    in_specs = [q_blk, kv_blk, kv_blk, q_blk, rows, rows]
    args = [q_BNTH, k_BKSH, v_BKSH, do_BNTH, lse_row, delta_row]
    if seg:
        in_specs += [pl.BlockSpec((None, 1, bq), q_seg_index),
                     pl.BlockSpec((None, bk, 1), lambda b, h, j, s, *_: (b, j, 0))]
        args += [q_row, kv_col]
    dk, dv = pl.pallas_call(
        functools.partial(_dkdv_kernel, static=static, nq=nq, nk=nk, seg=seg, group=G),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=len(pre_k), grid=(B, K, nk, G * nq), in_specs=in_specs,
            out_specs=[kv_blk, kv_blk],
            scratch_shapes=[pltpu.VMEM((bk, H), jnp.float32), pltpu.VMEM((bk, H), jnp.float32)]),
        out_shape=[_out(k_BKSH.shape, grad_dtype or k_BKSH.dtype, q_BNTH),
                   _out(v_BKSH.shape, grad_dtype or v_BKSH.dtype, q_BNTH)],
        interpret=static.interpret, name="flash_attention_dkdv",
        compiler_params=_params(static.interpret),
    )(*pre_k, *args)
    return dq, dk, dv


def _probs_t(static, q, k, lse_row, mask_t):
    """p^T [bk, bq] from transposed scores k q^T and the lse row."""
    s = jnp.where(mask_t, mosaic_dot_nt(k, q) * static.sm_scale, MASK_VALUE)
    return jnp.where(mask_t, jnp.exp(s - lse_row), 0.0)


def _dq_kernel(qmin, qmax, kmin, kmax, lo1, len1, lo2, len2, q_ref, k_ref, v_ref, do_ref,
               lse_ref, delta_ref, *rest, static, nq, nk, seg):
    if seg:
        q_seg_ref, kv_seg_ref, dq_ref, dq_sc = rest
    else:
        q_seg_ref = kv_seg_ref = None
        dq_ref, dq_sc = rest
    bq, bk = static.block_q, static.block_k
    b, i, t = pl.program_id(0), pl.program_id(2), pl.program_id(3)

    @pl.when(t == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)

    j, in_runs = _visited_block((lo1, len1, lo2, len2), b * nq + i, t)
    q_start, k_start = i * bq, j * bk
    visible = in_runs & _visible(static, q_start, k_start, b, i, j, nq, nk, qmin, qmax, kmin,
                                 kmax)

    @pl.when(visible)
    def _compute():
        q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
        mask_t = _mask_t(static, q_start, k_start,
                         None if q_seg_ref is None else q_seg_ref[...],
                         None if kv_seg_ref is None else kv_seg_ref[...])
        p_t = _probs_t(static, q, k, lse_ref[...], mask_t)
        ds_t = p_t * (mosaic_dot_nt(v, do) - delta_ref[...])
        dq_sc[...] += mosaic_dot_tn(ds_t.astype(k.dtype), k)

    @pl.when(t == nk - 1)
    def _finish():
        dq_ref[...] = (dq_sc[...] * static.sm_scale).astype(dq_ref.dtype)


def _dkdv_kernel(qmin, qmax, kmin, kmax, lo1, len1, lo2, len2, q_ref, k_ref, v_ref, do_ref,
                 lse_ref, delta_ref, *rest, static, nq, nk, seg, group):
    if seg:
        q_seg_ref, kv_seg_ref, dk_ref, dv_ref, dk_sc, dv_sc = rest
    else:
        q_seg_ref = kv_seg_ref = None
        dk_ref, dv_ref, dk_sc, dv_sc = rest
    bq, bk = static.block_q, static.block_k
    b, j, s = pl.program_id(0), pl.program_id(2), pl.program_id(3)
    t = lax.rem(s, nq)

    @pl.when(s == 0)
    def _init():
        dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
        dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

    i, in_runs = _visited_block((lo1, len1, lo2, len2), b * nk + j, t)
    q_start, k_start = i * bq, j * bk
    visible = in_runs & _visible(static, q_start, k_start, b, i, j, nq, nk, qmin, qmax, kmin,
                                 kmax)

    @pl.when(visible)
    def _compute():
        q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
        mask_t = _mask_t(static, q_start, k_start,
                         None if q_seg_ref is None else q_seg_ref[...],
                         None if kv_seg_ref is None else kv_seg_ref[...])
        p_t = _probs_t(static, q, k, lse_ref[...], mask_t)
        dv_sc[...] += mosaic_dot(p_t.astype(do.dtype), do)
        ds_t = p_t * (mosaic_dot_nt(v, do) - delta_ref[...])
        dk_sc[...] += mosaic_dot(ds_t.astype(q.dtype), q)

    @pl.when(s == group * nq - 1)
    def _finish():
        dk_ref[...] = (dk_sc[...] * static.sm_scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)
