"""Prefix-shared flash-decoding: G samples of a prompt read ONE prompt KV cache.

    out_BGTNH = decode_attention(q_BGTNH, prefix_k_BSKH, prefix_v_BSKH, prefix_len_B,
                                 resp_k_BGRKH, resp_v_BGRKH, resp_len_BG)

Dimensions: B prompts, G samples per prompt, T new query tokens per sample (usually 1), N query
heads, K kv heads (N % K == 0, Q = N // K query heads per kv head), S prompt cache length, R
response cache length, H head dim.

Masking: the T queries of sample (b, g) are the LAST T valid entries of its response cache
(`resp_len_BG` counts valid response entries including them; it must be >= T). Every query sees
prompt keys [0, prefix_len_B[b]) and response keys r <= its own position (causal).

Algorithm (flash-decoding): the prompt cache is split along S; one Pallas program per
(prompt, kv head, split) loops over the split's blocks with an online softmax and writes a
normalised partial output plus its log-sum-exp. All G*T*Q query rows of a prompt and kv head are
one [rows, H] matrix, so each prompt block is loaded ONCE for the whole group (never broadcast or
copied G times) and the scores are a real matmul instead of G mat-vecs. The response caches get
the same treatment per (prompt, sample, kv head, split). The partials are merged with
log-sum-exp weights in XLA. Blocks past the valid lengths are not visited (dynamic loop bounds).

Departures: inference only (no backward). Caches are read in their [B, S, K, H] layout (a per-step
transpose would copy the cache). Two kernel shapes (`kernel=`): "loop" (above; Triton and the CPU
interpret default), whose [split, None, H] blocks Mosaic rejects, and "grid"
(`kernels/decode_tpu.py`: the cache viewed as [B, S, K*H], a grid over cache blocks with VMEM
scratch; the default when the compile target is a TPU). For Triton (a GPU target) the loop
kernel pads its query rows (G*T*Q, T*Q) to a power of two of at least 16 and its length vectors
to powers of two, and slices the padding off (Triton's lowering takes power-of-two arrays only;
40 query heads over 8 kv heads give 5 rows per kv head). Both run in interpret mode in the
tests (the padded program too); the grid kernel is compiled for TPU by
tests/test_compile_kernels.py, the loop kernel for H100 by tests/test_compile_gpu.py, neither
run on a chip.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels import flash
from kernels.flash import (MIN_BLOCK, compiler_params, resolve_interpret,
                           resolve_kernel)
from kernels.kernel_math import dot, dot_nt, iota
from kernels.reference import MASK_VALUE

# ----------------------------------------------------------------------------- constants
DEFAULT_BLOCK_S = {"cpu": 128, "gpu": 64, "tpu": 128}
MAX_SPLITS = 16  # splits per cache: enough parallelism without a huge partial-result buffer


# ----------------------------------------------------------------------------- block sizes
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


def _blocks_per_split(length: int, block: int) -> int:
    return max(1, -(-(-(-length // block)) // MAX_SPLITS))


def decode_block_size(block_s: int | None, backend: str) -> int:
    b = DEFAULT_BLOCK_S.get(backend, 128) if block_s is None else block_s
    if not isinstance(b, int) or isinstance(b, bool) or b <= 0 or b % MIN_BLOCK:
        raise ValueError(f"block_s={b!r} must be a positive multiple of {MIN_BLOCK}")
    if backend == "gpu" and b & (b - 1):
        raise ValueError(f"block_s={b} must be a power of two on gpu (Triton)")
    return b


# ----------------------------------------------------------------------------- public wrapper
def decode_attention(q_BGTNH, prefix_k_BSKH, prefix_v_BSKH, prefix_len_B, resp_k_BGRKH,
                     resp_v_BGRKH, resp_len_BG, *, block_s: int | None = None,
                     interpret: bool | None = None, sm_scale: float | None = None,
                     kernel: str | None = None):
    """Attention of G samples' new tokens over a shared prompt cache plus their own responses.

    kernel: "grid" (Mosaic shape) or "loop" (Triton shape); default from the compile target."""
    if q_BGTNH.ndim != 5:
        raise ValueError(f"q must be [B,G,T,N,H], got {q_BGTNH.shape}")
    B, G, T, N, H = q_BGTNH.shape
    if prefix_k_BSKH.shape != prefix_v_BSKH.shape or prefix_k_BSKH.ndim != 4:
        raise ValueError(f"prefix k/v must both be [B,S,K,H]; got {prefix_k_BSKH.shape}, "
                         f"{prefix_v_BSKH.shape}")
    _, S, K, _ = prefix_k_BSKH.shape
    if prefix_k_BSKH.shape[0] != B or prefix_k_BSKH.shape[3] != H or N % K:
        raise ValueError(f"prefix cache {prefix_k_BSKH.shape} does not fit q {q_BGTNH.shape} "
                         f"(need same B and H, N % K == 0)")
    if resp_k_BGRKH.shape != resp_v_BGRKH.shape or resp_k_BGRKH.ndim != 5 or (
            resp_k_BGRKH.shape[:2] != (B, G) or resp_k_BGRKH.shape[3:] != (K, H)):
        raise ValueError(f"response k/v must both be [B,G,R,K,H]=[{B},{G},R,{K},{H}]; got "
                         f"{resp_k_BGRKH.shape}, {resp_v_BGRKH.shape}")
    if prefix_len_B.shape != (B,) or resp_len_BG.shape != (B, G):
        raise ValueError(f"prefix_len_B must be [{B}] and resp_len_BG [{B},{G}]; got "
                         f"{prefix_len_B.shape}, {resp_len_BG.shape}")
    R = resp_k_BGRKH.shape[2]
    if R < T:
        raise ValueError(f"response cache length R={R} must be >= new tokens T={T}")
    bs = decode_block_size(block_s, flash.target_backend())
    Q = N // K
    static = DecodeStatic(
        block_s=bs, prefix_blocks_per_split=_blocks_per_split(S, bs),
        resp_blocks_per_split=_blocks_per_split(R, bs), queries=T, heads_per_kv=Q,
        sm_scale=float(H**-0.5 if sm_scale is None else sm_scale),
        interpret=resolve_interpret(interpret), kernel=resolve_kernel(kernel))

    # Rows of one (prompt, kv head): (sample, token, head-in-group). A small copy of q, not of KV.
    q_BKGrH = q_BGTNH.reshape(B, G, T, K, Q, H).transpose(0, 3, 1, 2, 4, 5).reshape(
        B, K, G, T * Q, H)
    o_pre, lse_pre = _prefix_partials(static, q_BKGrH.reshape(B, K, G * T * Q, H),
                                      prefix_k_BSKH, prefix_v_BSKH, prefix_len_B.astype(jnp.int32))
    o_res, lse_res = _response_partials(static, q_BKGrH.transpose(0, 2, 1, 3, 4), resp_k_BGRKH,
                                        resp_v_BGRKH, resp_len_BG.astype(jnp.int32))
    # Both to [B, G, K, splits, rows(T*Q), ...] and merge all splits by log-sum-exp.
    o_pre = o_pre.reshape(B, K, -1, G, T * Q, H).transpose(0, 3, 1, 2, 4, 5)
    lse_pre = lse_pre.reshape(B, K, -1, G, T * Q).transpose(0, 3, 1, 2, 4)
    o_all = jnp.concatenate([o_pre, o_res], axis=3)
    lse_all = jnp.concatenate([lse_pre, lse_res], axis=3)
    w = jnp.exp(lse_all - jnp.max(lse_all, axis=3, keepdims=True))
    out_BGKrH = jnp.sum(w[..., None] * o_all, axis=3) / jnp.sum(w, axis=3)[..., None]
    out = out_BGKrH.reshape(B, G, K, T, Q, H).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(B, G, T, N, H).astype(q_BGTNH.dtype)


def _triton_padding(static: DecodeStatic) -> bool:
    """Triton (the GPU lowering) wants every block's size a power of two (and a dot's rows >= 16):
    the query rows (G*T*Q or T*Q, e.g. 16 x 5 for 40 query heads over 8 kv heads) and the length
    vectors are padded to that and the padded rows sliced off; they cost the kernel's matmuls
    their padding, no extra pass over the cache. Also in interpret mode when the target is a GPU
    (`flash.use_target("gpu")`), so that the padded program is checked against the reference on
    CPU (tests/test_decode_attention.py)."""
    return flash.target_backend() == "gpu"


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _rows_pow2(n: int) -> int:
    return max(16, _pow2(n))


def _pad_to(x, axis: int, n: int):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, n - x.shape[axis])
    return jnp.pad(x, pad)


def _prefix_partials(static: DecodeStatic, q_BKMH, k_BSKH, v_BSKH, prefix_len_B):
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
        in_specs=[pl.BlockSpec((None, None, Mp, H), lambda b, h, j: (b, h, 0, 0)), kv_spec,
                  kv_spec, pl.BlockSpec((Bl,), lambda b, h, j: (0,))],
        out_specs=[pl.BlockSpec((None, None, None, Mp, H), lambda b, h, j: (b, h, j, 0, 0)),
                   pl.BlockSpec((None, None, None, Mp), lambda b, h, j: (b, h, j, 0))],
        out_shape=[jax.ShapeDtypeStruct((B, K, n_splits, Mp, H), jnp.float32),
                   jax.ShapeDtypeStruct((B, K, n_splits, Mp), jnp.float32)],
        interpret=static.interpret, name="decode_attention_prefix",
        compiler_params=compiler_params(3, static.interpret),
    )(q_BKMH, k_BSKH, v_BSKH, prefix_len_B)
    return o[:, :, :, :M], lse[:, :, :, :M]


def _response_partials(static: DecodeStatic, q_BGKrH, k_BGRKH, v_BGRKH, resp_len_BG):
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
        in_specs=[pl.BlockSpec((None, None, None, rows_p, H), lambda b, g, h, j: (b, g, h, 0, 0)),
                  kv_spec, kv_spec, pl.BlockSpec(len_shape, lambda b, g, h, j: (0, 0))],
        out_specs=[pl.BlockSpec((None, None, None, None, rows_p, H),
                                lambda b, g, h, j: (b, g, h, j, 0, 0)),
                   pl.BlockSpec((None, None, None, None, rows_p),
                                lambda b, g, h, j: (b, g, h, j, 0))],
        out_shape=[jax.ShapeDtypeStruct((B, G, K, n_splits, rows_p, H), jnp.float32),
                   jax.ShapeDtypeStruct((B, G, K, n_splits, rows_p), jnp.float32)],
        interpret=static.interpret, name="decode_attention_response",
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
        return (alpha[:, None] * acc + dot(p.astype(v.dtype), v), m_new,
                alpha * l + jnp.sum(p, axis=1))

    init = (jnp.zeros((rows, H), jnp.float32), jnp.full((rows,), MASK_VALUE, jnp.float32),
            jnp.zeros((rows,), jnp.float32))
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
    o, lse = _split_attention(static, q_ref[...], k_ref, v_ref, split_start,
                              prefix_len - split_start, row_limit)
    o_ref[...], lse_ref[...] = o, lse


def _response_kernel(q_ref, k_ref, v_ref, len_ref, o_ref, lse_ref, *, static):
    split_start = pl.program_id(3) * k_ref.shape[0]
    resp_len = len_ref[pl.program_id(0), pl.program_id(1)]
    rows = q_ref.shape[0]
    # Row r is new token t = r // Q, at response position resp_len - T + t; it sees keys <= it.
    token = lax.div(iota(rows, 0), static.heads_per_kv)
    # (min: rows past T*Q are Triton's power-of-two padding, sliced off; keep them in bounds)
    row_limit = jnp.minimum(resp_len - static.queries + token + 1, resp_len)
    o, lse = _split_attention(static, q_ref[...], k_ref, v_ref, split_start,
                              resp_len - split_start, row_limit)
    o_ref[...], lse_ref[...] = o, lse


# ----------------------------------------------------------------------------- reference
def reference_decode_attention(q_BGTNH, prefix_k_BSKH, prefix_v_BSKH, prefix_len_B,
                               resp_k_BGRKH, resp_v_BGRKH, resp_len_BG, *,
                               sm_scale: float | None = None):
    """Plain-jnp decode attention with the same masking (full scores, f32 softmax)."""
    B, G, T, N, H = q_BGTNH.shape
    S, K = prefix_k_BSKH.shape[1], prefix_k_BSKH.shape[2]
    R = resp_k_BGRKH.shape[2]
    scale = H**-0.5 if sm_scale is None else sm_scale
    q = q_BGTNH.reshape(B, G, T, K, N // K, H)
    s_pre = jnp.einsum("bgtkqh,bskh->bgtkqs", q, prefix_k_BSKH,
                       preferred_element_type=jnp.float32) * scale
    s_res = jnp.einsum("bgtkqh,bgrkh->bgtkqr", q, resp_k_BGRKH,
                       preferred_element_type=jnp.float32) * scale
    pre_ok = (jnp.arange(S)[None, :] < prefix_len_B[:, None])[:, None, None, None, None, :]
    pos_BGT = resp_len_BG[:, :, None] - T + jnp.arange(T)[None, None, :]
    res_ok = (jnp.arange(R)[None, None, None, :] <= pos_BGT[..., None])[:, :, :, None, None, :]
    scores = jnp.concatenate([jnp.where(pre_ok, s_pre, MASK_VALUE),
                              jnp.where(res_ok, s_res, MASK_VALUE)], axis=-1)
    probs = jax.nn.softmax(scores, axis=-1)
    out = (jnp.einsum("bgtkqs,bskh->bgtkqh", probs[..., :S].astype(prefix_v_BSKH.dtype),
                      prefix_v_BSKH, preferred_element_type=jnp.float32)
           + jnp.einsum("bgtkqr,bgrkh->bgtkqh", probs[..., S:].astype(resp_v_BGRKH.dtype),
                        resp_v_BGRKH, preferred_element_type=jnp.float32))
    return out.reshape(B, G, T, N, H).astype(q_BGTNH.dtype)
