"""Flash attention backward shaped for Mosaic (TPU): grids over blocks with VMEM accumulators.

Same padded interface as `kernels/flash.py`'s `flash_backward` (which dispatches here when the
kernel is "grid"). dq: grid (batch, head, q block, step over kv blocks), like the forward. dk/dv:
grid (batch, kv head, kv block, step over (query head of the group, q block)). Both compute
transposed scores s^T = k q^T [bk, bq] so that the lane-dense log-sum-exp and delta rows
broadcast without a transpose. Only the blocks inside the block runs (kernels/block_runs.py)
are fetched, only the visible ones computed (kernel bodies: kernels/flash_tpu_bwd_kernels.py).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.block_runs import prefetch_runs, visited_block
from kernels.flash_tpu import grid_params, out_struct, seg_layouts
from kernels.flash_tpu_bwd_kernels import dkdv_kernel, dq_kernel


def flash_backward_grid(
    static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT1, kv_seg_B1S, do_BNTH, lse_BNT1, delta_BNT1, grad_dtype=None
):
    """(dq, dk, dv) of padded inputs; lse/delta given as [B, N, Tp, 1] (stored as rows)."""
    B, N, Tp, H = q_BNTH.shape
    K, Sp = k_BKSH.shape[1], k_BKSH.shape[2]
    G, bq, bk = N // K, static.block_q, static.block_k
    nq, nk = Tp // bq, Sp // bk
    seg = static.mask.has_segments
    _, q_row, _, kv_col = seg_layouts(static, q_seg_BT1, kv_seg_B1S)
    lse_row, delta_row = lse_BNT1.reshape(B, N, 1, Tp), delta_BNT1.reshape(B, N, 1, Tp)
    q_ids = q_seg_BT1[..., 0] if seg else None
    kv_ids = kv_seg_B1S[:, 0] if seg else None
    from jax.experimental.pallas import tpu as pltpu

    # dq: grid (b, n, q block i, step over kv blocks), like the forward.
    pre_q = prefetch_runs(static, B, nq, nk, q_ids, kv_ids, transpose=False)

    def kv_index(b, n, i, t, *refs):
        return b, lax.div(n, G), visited_block(refs[4:], b * nq + i, t)[0], 0

    def kv_seg_index(b, n, i, t, *refs):
        return b, visited_block(refs[4:], b * nq + i, t)[0], 0

    q_spec = pl.BlockSpec((None, None, bq, H), lambda b, n, i, t, *_: (b, n, i, 0))
    row_spec = pl.BlockSpec((None, None, 1, bq), lambda b, n, i, t, *_: (b, n, 0, i))
    kv_spec = pl.BlockSpec((None, None, bk, H), kv_index)
    in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec]
    args = [q_BNTH, k_BKSH, v_BKSH, do_BNTH, lse_row, delta_row]
    if seg:
        in_specs += [
            pl.BlockSpec((None, 1, bq), lambda b, n, i, t, *_: (b, 0, i)),
            pl.BlockSpec((None, bk, 1), kv_seg_index),
        ]
        args += [q_row, kv_col]
    dq = pl.pallas_call(
        functools.partial(dq_kernel, static=static, nq=nq, nk=nk, seg=seg),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=len(pre_q),
            grid=(B, N, nq, nk),
            in_specs=in_specs,
            out_specs=q_spec,
            scratch_shapes=[pltpu.VMEM((bq, H), jnp.float32)],
        ),
        out_shape=out_struct(q_BNTH.shape, grad_dtype or q_BNTH.dtype, q_BNTH),
        interpret=static.interpret,
        name="flash_attention_dq",
        compiler_params=grid_params(static.interpret),
    )(*pre_q, *args)

    # dk/dv: grid (b, kv head h, kv block j, step over (query head of the group, q block)).
    pre_k = prefetch_runs(static, B, nq, nk, q_ids, kv_ids, transpose=True)

    def q_index(b, h, j, s, *refs):
        g, t = lax.div(s, nq), lax.rem(s, nq)
        return b, h * G + g, visited_block(refs[4:], b * nk + j, t)[0], 0

    def q_row_index(b, h, j, s, *refs):
        g, t = lax.div(s, nq), lax.rem(s, nq)
        return b, h * G + g, 0, visited_block(refs[4:], b * nk + j, t)[0]

    def q_seg_index(b, h, j, s, *refs):
        return b, 0, visited_block(refs[4:], b * nk + j, lax.rem(s, nq))[0]

    kv_blk = pl.BlockSpec((None, None, bk, H), lambda b, h, j, s, *_: (b, h, j, 0))
    q_blk = pl.BlockSpec((None, None, bq, H), q_index)
    rows = pl.BlockSpec((None, None, 1, bq), q_row_index)
    in_specs = [q_blk, kv_blk, kv_blk, q_blk, rows, rows]
    args = [q_BNTH, k_BKSH, v_BKSH, do_BNTH, lse_row, delta_row]
    if seg:
        in_specs += [
            pl.BlockSpec((None, 1, bq), q_seg_index),
            pl.BlockSpec((None, bk, 1), lambda b, h, j, s, *_: (b, j, 0)),
        ]
        args += [q_row, kv_col]
    dk, dv = pl.pallas_call(
        functools.partial(dkdv_kernel, static=static, nq=nq, nk=nk, seg=seg, group=G),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=len(pre_k),
            grid=(B, K, nk, G * nq),
            in_specs=in_specs,
            out_specs=[kv_blk, kv_blk],
            scratch_shapes=[pltpu.VMEM((bk, H), jnp.float32), pltpu.VMEM((bk, H), jnp.float32)],
        ),
        out_shape=[
            out_struct(k_BKSH.shape, grad_dtype or k_BKSH.dtype, q_BNTH),
            out_struct(v_BKSH.shape, grad_dtype or v_BKSH.dtype, q_BNTH),
        ],
        interpret=static.interpret,
        name="flash_attention_dkdv",
        compiler_params=grid_params(static.interpret),
    )(*pre_k, *args)
    return dq, dk, dv
