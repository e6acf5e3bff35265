"""Flash attention forward shaped for Mosaic (TPU): a grid over kv blocks (backward:
kernels/flash_tpu_bwd.py).

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

from kernels.block_mask import element_mask
from kernels.block_runs import prefetch_runs, visible_at, visited_block
from kernels.kernel_math import mosaic_dot, mosaic_dot_nt
from kernels.reference import MASK_VALUE

LANES = 128


def grid_params(interpret: bool):
    if interpret:
        return None
    from jax.experimental.pallas import tpu as pltpu

    return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))


def out_struct(shape, dtype, like):
    return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=jax.typeof(like).mat)


def positions(n: int, start, axis: int):
    shape = (n, 1) if axis == 0 else (1, n)
    return start + lax.broadcasted_iota(jnp.int32, shape, axis)


def kv_padded(static) -> bool:
    return static.mask.kv_len % static.block_k != 0


def seg_layouts(static, q_seg_BT1, kv_seg_B1S):
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
    q_col, _, kv_row, _ = seg_layouts(static, q_seg_BT1, kv_seg_B1S)
    prefetch = prefetch_runs(
        static, B, nq, nk, q_seg_BT1[..., 0] if seg else None, kv_seg_B1S[:, 0] if seg else None, transpose=False
    )

    def kv_index(b, n, i, t, *refs):
        j, _ = visited_block(refs[4:], b * nq + i, t)
        return b, lax.div(n, G), j, 0

    def kv_seg_index(b, n, i, t, *refs):
        return b, 0, visited_block(refs[4:], b * nq + i, t)[0]

    q_spec = pl.BlockSpec((None, None, bq, H), lambda b, n, i, t, *_: (b, n, i, 0))
    kv_spec = pl.BlockSpec((None, None, bk, H), kv_index)
    in_specs = [q_spec, kv_spec, kv_spec]
    args = [q_BNTH, k_BKSH, v_BKSH]
    if seg:
        in_specs += [
            pl.BlockSpec((None, bq, 1), lambda b, n, i, t, *_: (b, i, 0)),
            pl.BlockSpec((None, 1, bk), kv_seg_index),
        ]
        args += [q_col, kv_row]
    from jax.experimental.pallas import tpu as pltpu

    spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=len(prefetch),
        grid=(B, N, nq, nk),
        in_specs=in_specs,
        out_specs=[q_spec, pl.BlockSpec((None, None, 1, bq), lambda b, n, i, t, *_: (b, n, 0, i))],
        scratch_shapes=[
            pltpu.VMEM((bq, 1), jnp.float32),
            pltpu.VMEM((bq, 1), jnp.float32),
            pltpu.VMEM((bq, H), jnp.float32),
        ],
    )
    out, lse_row = pl.pallas_call(
        functools.partial(_fwd_kernel, static=static, nq=nq, nk=nk, seg=seg),
        grid_spec=spec,
        out_shape=[out_struct(q_BNTH.shape, q_BNTH.dtype, q_BNTH), out_struct((B, N, 1, Tp), jnp.float32, q_BNTH)],
        interpret=static.interpret,
        name="flash_attention_fwd",
        compiler_params=grid_params(static.interpret),
    )(*prefetch, *args)
    return out, lse_row.reshape(B, N, Tp, 1)


def _fwd_kernel(qmin, qmax, kmin, kmax, lo1, len1, lo2, len2, q_ref, k_ref, v_ref, *rest, static, nq, nk, seg):
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

    j, in_runs = visited_block((lo1, len1, lo2, len2), b * nq + i, t)
    q_start, k_start = i * bq, j * bk
    visible = in_runs & visible_at(static, q_start, k_start, b, i, j, nq, nk, qmin, qmax, kmin, kmax)

    @pl.when(visible)
    def _compute():
        q, k, v = q_ref[...], k_ref[...], v_ref[...]
        q_seg = None if q_seg_ref is None else q_seg_ref[...]
        k_seg = None if kv_seg_ref is None else kv_seg_ref[...]
        mask = element_mask(
            static.mask, positions(bq, q_start, 0), positions(bk, k_start, 1), q_seg, k_seg, kv_padded=kv_padded(static)
        )
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
