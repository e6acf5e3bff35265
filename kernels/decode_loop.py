"""`DecodeStatic` and the "loop" shape of the decode kernels (Triton's, and the CPU interpret default).

One Pallas program per (prompt, kv head, split) of the prompt cache, and per (prompt, sample, kv
head, split) of the response caches, loops over the split's blocks with an online softmax and
writes a normalised partial output plus its log-sum-exp (merged in kernels/decode.py). Blocks
past the valid lengths are not visited (dynamic loop bounds). The "grid" shape (Mosaic) is in
kernels/decode_tpu.py; `prefix_partials` / `response_partials` dispatch on `static.kernel`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels import backend
from kernels.backend import compiler_params
from kernels.kernel_math import dot, dot_nt, iota
from kernels.reference import MASK_VALUE


@dataclasses.dataclass(frozen=True)
class DecodeStatic:
    block_s: int
    prefix_blocks_per_split: int
    resp_blocks_per_split: int
    queries: int  # T
    heads_per_kv: int  # Q
    sm_scale: float
    interpret: bool
    kernel: str = "loop"  # "loop" (Triton/CPU) | "grid" (Mosaic, kernels/decode_tpu.py)


def _triton_padding(static: DecodeStatic) -> bool:
    """Triton (the GPU lowering) wants every block's size a power of two (and a dot's rows >= 16):
    the query rows (G*T*Q or T*Q, e.g. 16 x 5 for 40 query heads over 8 kv heads) and the length
    vectors are padded to that and the padded rows sliced off; they cost the kernel's matmuls
    their padding, no extra pass over the cache. Also in interpret mode when the target is a GPU
    (`backend.use_target("gpu")`), so that the padded program is checked against the reference on
    CPU (tests/test_decode_attention.py)."""
    return backend.target_backend() == "gpu"


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _rows_pow2(n: int) -> int:
    return max(16, _pow2(n))


def _pad_to(x, axis: int, n: int):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, n - x.shape[axis])
    return jnp.pad(x, pad)


def prefix_partials(static: DecodeStatic, q_BKMH, k_BSKH, v_BSKH, prefix_len_B):
    if static.kernel == "grid":
        from kernels.decode_tpu import prefix_partials_grid

        return prefix_partials_grid(static, q_BKMH, k_BSKH, v_BSKH, prefix_len_B)
    B, K, M, H = q_BKMH.shape
    S = k_BSKH.shape[1]
    if _triton_padding(static):
        q_BKMH = _pad_to(q_BKMH, 2, _rows_pow2(M))
        prefix_len_B = _pad_to(prefix_len_B, 0, _pow2(B))
    Mp, Bl = q_BKMH.shape[2], prefix_len_B.shape[0]
    split = static.block_s * static.prefix_blocks_per_split
    n_splits = -(-S // split)
    kv_spec = pl.BlockSpec((None, split, None, H), lambda b, h, j: (b, j, h, 0))
    o, lse = pl.pallas_call(
        functools.partial(_prefix_kernel, static=static),
        grid=(B, K, n_splits),
        in_specs=[
            pl.BlockSpec((None, None, Mp, H), lambda b, h, j: (b, h, 0, 0)),
            kv_spec,
            kv_spec,
            pl.BlockSpec((Bl,), lambda b, h, j: (0,)),
        ],
        out_specs=[
            pl.BlockSpec((None, None, None, Mp, H), lambda b, h, j: (b, h, j, 0, 0)),
            pl.BlockSpec((None, None, None, Mp), lambda b, h, j: (b, h, j, 0)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((B, K, n_splits, Mp, H), jnp.float32),
            jax.ShapeDtypeStruct((B, K, n_splits, Mp), jnp.float32),
        ],
        interpret=static.interpret,
        name="decode_attention_prefix",
        compiler_params=compiler_params(3, static.interpret),
    )(q_BKMH, k_BSKH, v_BSKH, prefix_len_B)
    return o[:, :, :, :M], lse[:, :, :, :M]


def response_partials(static: DecodeStatic, q_BGKrH, k_BGRKH, v_BGRKH, resp_len_BG):
    if static.kernel == "grid":
        from kernels.decode_tpu import response_partials_grid

        return response_partials_grid(static, q_BGKrH, k_BGRKH, v_BGRKH, resp_len_BG)
    B, G, K, rows, H = q_BGKrH.shape
    R = k_BGRKH.shape[2]
    if _triton_padding(static):
        q_BGKrH = _pad_to(q_BGKrH, 3, _rows_pow2(rows))
        resp_len_BG = _pad_to(_pad_to(resp_len_BG, 0, _pow2(B)), 1, _pow2(G))
    rows_p, len_shape = q_BGKrH.shape[3], resp_len_BG.shape
    split = static.block_s * static.resp_blocks_per_split
    n_splits = -(-R // split)
    kv_spec = pl.BlockSpec((None, None, split, None, H), lambda b, g, h, j: (b, g, j, h, 0))
    o, lse = pl.pallas_call(
        functools.partial(_response_kernel, static=static),
        grid=(B, G, K, n_splits),
        in_specs=[
            pl.BlockSpec((None, None, None, rows_p, H), lambda b, g, h, j: (b, g, h, 0, 0)),
            kv_spec,
            kv_spec,
            pl.BlockSpec(len_shape, lambda b, g, h, j: (0, 0)),
        ],
        out_specs=[
            pl.BlockSpec((None, None, None, None, rows_p, H), lambda b, g, h, j: (b, g, h, j, 0, 0)),
            pl.BlockSpec((None, None, None, None, rows_p), lambda b, g, h, j: (b, g, h, j, 0)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct((B, G, K, n_splits, rows_p, H), jnp.float32),
            jax.ShapeDtypeStruct((B, G, K, n_splits, rows_p), jnp.float32),
        ],
        interpret=static.interpret,
        name="decode_attention_response",
        compiler_params=compiler_params(4, static.interpret),
    )(q_BGKrH, k_BGRKH, v_BGRKH, resp_len_BG)
    return o[..., :rows, :], lse[..., :rows]


# ----------------------------------------------------------------------------- kernels
def _split_attention(static: DecodeStatic, q, k_ref, v_ref, split_start, num_valid, row_limit):
    """Online softmax of q [rows, H] over keys [split_start, +split) with index < row_limit[row].

    num_valid bounds the loop (keys of the split at or past it are never loaded). Writes nothing;
    returns the normalised partial output [rows, H] f32 and its log-sum-exp [rows].
    """
    bs = static.block_s
    rows, H = q.shape

    def body(j, carry):
        acc, m, l = carry
        sl = pl.ds(pl.multiple_of(j * bs, bs), bs)
        k_pos = iota(bs, split_start + j * bs)
        mask = k_pos[None, :] < row_limit[:, None]
        # Keys past the cache end may be out-of-bounds garbage (even NaN): zero v, not only p.
        v = jnp.where((k_pos < split_start + num_valid)[:, None], v_ref[sl, :], 0)
        s = jnp.where(mask, dot_nt(q, k_ref[sl, :]) * static.sm_scale, MASK_VALUE)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        p = jnp.where(mask, jnp.exp(s - m_new[:, None]), 0.0)
        alpha = jnp.exp(m - m_new)
        return (alpha[:, None] * acc + dot(p.astype(v.dtype), v), m_new, alpha * l + jnp.sum(p, axis=1))

    init = (
        jnp.zeros((rows, H), jnp.float32),
        jnp.full((rows,), MASK_VALUE, jnp.float32),
        jnp.zeros((rows,), jnp.float32),
    )
    hi = jnp.clip(lax.div(jnp.maximum(num_valid, 0) + bs - 1, bs), 0, k_ref.shape[0] // bs)
    acc, m, l = lax.fori_loop(0, hi, body, init)
    empty = l == 0.0
    l_safe = jnp.where(empty, 1.0, l)
    return acc / l_safe[:, None], jnp.where(empty, MASK_VALUE, m + jnp.log(l_safe))


def _prefix_kernel(q_ref, k_ref, v_ref, len_ref, o_ref, lse_ref, *, static):
    split_start = pl.program_id(2) * k_ref.shape[0]
    prefix_len = len_ref[pl.program_id(0)]
    rows = q_ref.shape[0]
    row_limit = jnp.full((rows,), prefix_len, jnp.int32)
    o, lse = _split_attention(static, q_ref[...], k_ref, v_ref, split_start, prefix_len - split_start, row_limit)
    o_ref[...], lse_ref[...] = o, lse


def _response_kernel(q_ref, k_ref, v_ref, len_ref, o_ref, lse_ref, *, static):
    split_start = pl.program_id(3) * k_ref.shape[0]
    resp_len = len_ref[pl.program_id(0), pl.program_id(1)]
    rows = q_ref.shape[0]
    # Row r is new token t = r // Q, at response position resp_len - T + t; it sees keys <= it.
    token = lax.div(iota(rows, 0), static.heads_per_kv)
    # (min: rows past T*Q are Triton's power-of-two padding, sliced off; keep them in bounds)
    row_limit = jnp.minimum(resp_len - static.queries + token + 1, resp_len)
    o, lse = _split_attention(static, q_ref[...], k_ref, v_ref, split_start, resp_len - split_start, row_limit)
    o_ref[...], lse_ref[...] = o, lse
