"""The "loop" shape of the flash kernels (Triton's, and the CPU interpret default): pallas_calls.

* Forward: grid (batch, query head, q block); each program keeps its q block resident and loops
  over kv blocks, reading the kv head `n // (N // K)` of its query head (GQA without repeating K/V
  in memory). It writes the output and the row log-sum-exp (the only residual besides q/k/v/o).
* Backward (FlashAttention-2): given delta = rowsum(o * do), two kernels that recompute the
  probabilities from the saved log-sum-exp: dq over (batch, query head, q block), and dk/dv over
  (batch, KV head, kv block) looping over the query heads of the group, so dk/dv are accumulated
  per KV head directly (no [.., N, S, H] intermediate summed afterwards).
The kernel bodies are in kernels/flash_loop_kernels.py; the inputs are padded as
`flash.pad_inputs` returns them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.backend import compiler_params
from kernels.block_sizes import FlashStatic
from kernels.flash_loop_kernels import dkdv_kernel, dq_kernel, fwd_kernel


def _out(shape, dtype, like):
    """Output shape for pallas_call; inside shard_map (ring attention) it must say how it varies
    over the mesh axes, which is how its input `like` varies."""
    return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=jax.typeof(like).mat)


def _q_seg_spec(block: int, index):
    return pl.BlockSpec((None, block, 1), index)


def _kv_seg_spec(block: int, index):
    return pl.BlockSpec((None, 1, block), index)


def flash_forward_loop(static: FlashStatic, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS, count_blocks: bool = False):
    """Padded forward: (out_BNTH, lse_BNT1[, computed-block count per q block [B,N,nq]])."""
    B, N, Tp, H = q_BNTH.shape
    K, Sp = k_BKSH.shape[1], k_BKSH.shape[2]
    G, bq = N // K, static.block_q
    seg = q_seg_BT is not None
    kv_full = pl.BlockSpec((None, None, Sp, H), lambda b, n, i: (b, lax.div(n, G), 0, 0))
    in_specs = [
        pl.BlockSpec((None, None, bq, H), lambda b, n, i: (b, n, i, 0)),
        kv_full,
        kv_full,
        _q_seg_spec(bq, lambda b, n, i: (b, i, 0)) if seg else None,
        _kv_seg_spec(Sp, lambda b, n, i: (b, 0, 0)) if seg else None,
    ]
    row_spec = pl.BlockSpec((None, None, bq, 1), lambda b, n, i: (b, n, i, 0))
    out_shape = [_out(q_BNTH.shape, q_BNTH.dtype, q_BNTH), _out((B, N, Tp, 1), jnp.float32, q_BNTH)]
    out_specs = [pl.BlockSpec((None, None, bq, H), lambda b, n, i: (b, n, i, 0)), row_spec]
    if count_blocks:  # debug output: number of kv blocks computed, broadcast over the q block
        out_shape.append(_out((B, N, Tp, 1), jnp.int32, q_BNTH))
        out_specs.append(row_spec)
    outs = pl.pallas_call(
        functools.partial(fwd_kernel, static=static),
        grid=(B, N, Tp // bq),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        interpret=static.interpret,
        name="flash_attention_fwd",
        compiler_params=compiler_params(3, static.interpret),
    )(q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS)
    if count_blocks:
        return outs[0], outs[1], outs[2][:, :, ::bq, 0]
    return outs[0], outs[1]


def flash_backward_loop(
    static: FlashStatic, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS, do_BNTH, lse_BNT1, delta_BNT1, grad_dtype=None
):
    """Padded backward given the log-sum-exp and delta = rowsum(o * do): (dq, dk, dv)."""
    B, N, Tp, H = q_BNTH.shape
    K, Sp = k_BKSH.shape[1], k_BKSH.shape[2]
    G, bq, bk = N // K, static.block_q, static.block_k
    seg = q_seg_BT is not None

    q_blk = pl.BlockSpec((None, None, bq, H), lambda b, n, i: (b, n, i, 0))
    kv_full = pl.BlockSpec((None, None, Sp, H), lambda b, n, i: (b, lax.div(n, G), 0, 0))
    row_blk = pl.BlockSpec((None, None, bq, 1), lambda b, n, i: (b, n, i, 0))
    dq = pl.pallas_call(
        functools.partial(dq_kernel, static=static),
        grid=(B, N, Tp // bq),
        in_specs=[
            q_blk,
            kv_full,
            kv_full,
            q_blk,
            row_blk,
            row_blk,
            _q_seg_spec(bq, lambda b, n, i: (b, i, 0)) if seg else None,
            _kv_seg_spec(Sp, lambda b, n, i: (b, 0, 0)) if seg else None,
        ],
        out_specs=q_blk,
        out_shape=_out(q_BNTH.shape, grad_dtype or q_BNTH.dtype, q_BNTH),
        interpret=static.interpret,
        name="flash_attention_dq",
        compiler_params=compiler_params(3, static.interpret),
    )(q_BNTH, k_BKSH, v_BKSH, do_BNTH, lse_BNT1, delta_BNT1, q_seg_BT, kv_seg_BS)

    # One program per (batch, kv head, kv block): the G query heads of the group are a block.
    q_group = pl.BlockSpec((None, G, Tp, H), lambda b, h, j: (b, h, 0, 0))
    row_group = pl.BlockSpec((None, G, Tp, 1), lambda b, h, j: (b, h, 0, 0))
    kv_blk = pl.BlockSpec((None, None, bk, H), lambda b, h, j: (b, h, j, 0))
    dk, dv = pl.pallas_call(
        functools.partial(dkdv_kernel, static=static, group=G),
        grid=(B, K, Sp // bk),
        in_specs=[
            q_group,
            kv_blk,
            kv_blk,
            q_group,
            row_group,
            row_group,
            _q_seg_spec(Tp, lambda b, h, j: (b, 0, 0)) if seg else None,
            _kv_seg_spec(bk, lambda b, h, j: (b, 0, j)) if seg else None,
        ],
        out_specs=[kv_blk, kv_blk],
        out_shape=[
            _out(k_BKSH.shape, grad_dtype or k_BKSH.dtype, q_BNTH),
            _out(v_BKSH.shape, grad_dtype or v_BKSH.dtype, q_BNTH),
        ],
        interpret=static.interpret,
        name="flash_attention_dkdv",
        compiler_params=compiler_params(3, static.interpret),
    )(q_BNTH, k_BKSH, v_BKSH, do_BNTH, lse_BNT1, delta_BNT1, q_seg_BT, kv_seg_BS)
    return dq, dk, dv
