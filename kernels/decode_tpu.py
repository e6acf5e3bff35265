"""Decode attention partials shaped for Mosaic (TPU): a grid over cache blocks.

Same results as `kernels/decode.py`'s split kernels (one "split" covering the whole cache), for
`decode_attention(..., kernel="grid")`, the default when the compile target is a TPU. The loop
kernels there read a [split, H] window per program, with a squeezed kv-head dim in the second-
minor place that Mosaic rejects; here:

* The caches are read in their [B, S, K, H] layout (no per-step copy: a [B, S, K*H] view is NOT
  free on TPU, whose HBM layout tiles the last two dims, and cost a full cache copy per call
  when tried). A block is (block_s, K, H), all kv heads of block_s positions; the kernel loops
  over the K heads and reads head h as the strided slice k[:, h, :].
* Grid (prompt or prompt*sample, cache block), the last axis "arbitrary": the online softmax
  statistics and the [K, rows, H] accumulator live in VMEM scratch, so on-chip memory is bounded
  by block_s and the number of query rows (G * T * Q for the prompt), never by the cache length.
* Blocks at or past the valid length (scalar-prefetched lengths) are neither fetched (the index
  map repeats the last valid block, which Pallas does not re-fetch) nor computed (`pl.when`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.kernel_math import mosaic_dot, mosaic_dot_nt
from kernels.reference import MASK_VALUE


def _params(interpret: bool):
    if interpret:
        return None
    from jax.experimental.pallas import tpu as pltpu

    return pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary"))


def _last_valid_block(length, block: int, num_blocks: int):
    return jnp.clip(lax.div(jnp.maximum(length, 1) - 1, block), 0, num_blocks - 1)


def _partials(static, q_BKMH, k_BSKH, v_BSKH, len_B, row_limit_fn, name: str):
    """(o [B, K, M, H] f32 normalised, lse [B, K, M, 1]) of q against cache rows [0, len_B[b])
    where query row r may see key positions < row_limit_fn(len, rows)[r]."""
    from jax.experimental.pallas import tpu as pltpu

    B, K, M, H = q_BKMH.shape
    S = k_BSKH.shape[1]
    bs = static.block_s
    nb = -(-S // bs)

    def kv_index(b, j, lens):
        return b, jnp.minimum(j, _last_valid_block(lens[b], bs, nb)), 0, 0

    kv_spec = pl.BlockSpec((None, bs, K, H), kv_index)
    q_spec = pl.BlockSpec((None, K, M, H), lambda b, j, lens: (b, 0, 0, 0))
    lse_spec = pl.BlockSpec((None, K, M, 1), lambda b, j, lens: (b, 0, 0, 0))
    return pl.pallas_call(
        functools.partial(_kernel, static=static, row_limit_fn=row_limit_fn),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1,
            grid=(B, nb),
            in_specs=[q_spec, kv_spec, kv_spec],
            out_specs=[q_spec, lse_spec],
            scratch_shapes=[
                pltpu.VMEM((K, M, 1), jnp.float32),
                pltpu.VMEM((K, M, 1), jnp.float32),
                pltpu.VMEM((K, M, H), jnp.float32),
            ],
        ),
        out_shape=[jax.ShapeDtypeStruct((B, K, M, H), jnp.float32), jax.ShapeDtypeStruct((B, K, M, 1), jnp.float32)],
        interpret=static.interpret,
        name=name,
        compiler_params=_params(static.interpret),
    )(len_B, q_BKMH, k_BSKH, v_BSKH)


def _kernel(lens, q_ref, k_ref, v_ref, o_ref, lse_ref, m_sc, l_sc, acc_sc, *, static, row_limit_fn):
    b, j, nb = pl.program_id(0), pl.program_id(1), pl.num_programs(1)
    bs = static.block_s
    length = lens[b]
    start = j * bs
    K, M = q_ref.shape[0], q_ref.shape[1]

    @pl.when(j == 0)
    def _init():
        m_sc[...] = jnp.full(m_sc.shape, MASK_VALUE, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

    @pl.when(start < length)
    def _compute():
        k_pos = start + lax.broadcasted_iota(jnp.int32, (1, bs), 1)
        mask = k_pos < row_limit_fn(length, M)  # [M, bs]
        valid = (start + lax.broadcasted_iota(jnp.int32, (bs, 1), 0)) < length
        for h in range(K):  # static: head h is the strided slice [:, h, :] of the block
            k = k_ref[:, h, :]
            v = jnp.where(valid, v_ref[:, h, :], 0)  # past the cache end may be garbage/NaN
            s = jnp.where(mask, mosaic_dot_nt(q_ref[h], k) * static.sm_scale, MASK_VALUE)
            m = m_sc[h]
            m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
            p = jnp.where(mask, jnp.exp(s - m_new), 0.0)
            alpha = jnp.exp(m - m_new)
            acc_sc[h] = alpha * acc_sc[h] + mosaic_dot(p.astype(v.dtype), v)
            l_sc[h] = alpha * l_sc[h] + jnp.sum(p, axis=1, keepdims=True)
            m_sc[h] = m_new

    @pl.when(j == nb - 1)
    def _finish():
        l = l_sc[...]
        empty = l == 0.0
        l_safe = jnp.where(empty, 1.0, l)
        o_ref[...] = acc_sc[...] / l_safe
        lse_ref[...] = jnp.where(empty, MASK_VALUE, m_sc[...] + jnp.log(l_safe))


def prefix_partials_grid(static, q_BKMH, k_BSKH, v_BSKH, prefix_len_B):
    """(o [B, K, 1, M, H] f32 normalised, lse [B, K, 1, M]) over the prompt cache."""
    o, lse = _partials(
        static, q_BKMH, k_BSKH, v_BSKH, prefix_len_B, lambda length, M: length, "decode_attention_prefix"
    )
    return o[:, :, None], lse[:, :, None, :, 0]


def response_partials_grid(static, q_BGKrH, k_BGRKH, v_BGRKH, resp_len_BG):
    """(o [B, G, K, 1, rows, H] f32 normalised, lse [B, G, K, 1, rows]) over own responses."""
    B, G, K, rows, H = q_BGKrH.shape

    def flat(x):  # leading dims merged: free on every layout
        return x.reshape((B * G,) + x.shape[2:])

    def row_limit(resp_len, M):
        # Row r is new token t = r // Q at response position resp_len - T + t; sees keys <= it.
        token = lax.div(lax.broadcasted_iota(jnp.int32, (M, 1), 0), static.heads_per_kv)
        return resp_len - static.queries + token + 1

    o, lse = _partials(
        static,
        flat(q_BGKrH),
        flat(k_BGRKH),
        flat(v_BGRKH),
        resp_len_BG.reshape(B * G),
        row_limit,
        "decode_attention_response",
    )
    return o.reshape(B, G, K, 1, rows, H), lse.reshape(B, G, K, 1, rows)
