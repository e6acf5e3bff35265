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
interpret default; kernels/decode_loop.py), whose [split, None, H] blocks Mosaic rejects, and "grid"
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

import jax
import jax.numpy as jnp

from kernels import backend
from kernels.backend import resolve_interpret, resolve_kernel
from kernels.block_sizes import MIN_BLOCK
from kernels.decode_loop import DecodeStatic, prefix_partials, response_partials
from kernels.reference import MASK_VALUE

# ----------------------------------------------------------------------------- constants
DEFAULT_BLOCK_S = {"cpu": 128, "gpu": 64, "tpu": 128}
MAX_SPLITS = 16  # splits per cache: enough parallelism without a huge partial-result buffer


# ----------------------------------------------------------------------------- block sizes
def _blocks_per_split(length: int, block: int) -> int:
    num_blocks = -(-length // block)
    return max(1, -(-num_blocks // MAX_SPLITS))


def decode_block_size(block_s: int | None, backend: str) -> int:
    b = DEFAULT_BLOCK_S.get(backend, 128) if block_s is None else block_s
    if not isinstance(b, int) or isinstance(b, bool) or b <= 0 or b % MIN_BLOCK:
        raise ValueError(f"block_s={b!r} must be a positive multiple of {MIN_BLOCK}")
    if backend == "gpu" and b & (b - 1):
        raise ValueError(f"block_s={b} must be a power of two on gpu (Triton)")
    return b


# ----------------------------------------------------------------------------- public wrapper
def decode_attention(
    q_BGTNH,
    prefix_k_BSKH,
    prefix_v_BSKH,
    prefix_len_B,
    resp_k_BGRKH,
    resp_v_BGRKH,
    resp_len_BG,
    *,
    block_s: int | None = None,
    interpret: bool | None = None,
    sm_scale: float | None = None,
    kernel: str | None = None,
):
    """Attention of G samples' new tokens over a shared prompt cache plus their own responses.

    kernel: "grid" (Mosaic shape) or "loop" (Triton shape); default from the compile target."""
    if q_BGTNH.ndim != 5:
        raise ValueError(f"q must be [B,G,T,N,H], got {q_BGTNH.shape}")
    B, G, T, N, H = q_BGTNH.shape
    if prefix_k_BSKH.shape != prefix_v_BSKH.shape or prefix_k_BSKH.ndim != 4:
        raise ValueError(f"prefix k/v must both be [B,S,K,H]; got {prefix_k_BSKH.shape}, {prefix_v_BSKH.shape}")
    _, S, K, _ = prefix_k_BSKH.shape
    if prefix_k_BSKH.shape[0] != B or prefix_k_BSKH.shape[3] != H or N % K:
        raise ValueError(
            f"prefix cache {prefix_k_BSKH.shape} does not fit q {q_BGTNH.shape} (need same B and H, N % K == 0)"
        )
    if (
        resp_k_BGRKH.shape != resp_v_BGRKH.shape
        or resp_k_BGRKH.ndim != 5
        or (resp_k_BGRKH.shape[:2] != (B, G) or resp_k_BGRKH.shape[3:] != (K, H))
    ):
        raise ValueError(
            f"response k/v must both be [B,G,R,K,H]=[{B},{G},R,{K},{H}]; got {resp_k_BGRKH.shape}, {resp_v_BGRKH.shape}"
        )
    if prefix_len_B.shape != (B,) or resp_len_BG.shape != (B, G):
        raise ValueError(
            f"prefix_len_B must be [{B}] and resp_len_BG [{B},{G}]; got {prefix_len_B.shape}, {resp_len_BG.shape}"
        )
    R = resp_k_BGRKH.shape[2]
    if R < T:
        raise ValueError(f"response cache length R={R} must be >= new tokens T={T}")
    bs = decode_block_size(block_s, backend.target_backend())
    Q = N // K
    static = DecodeStatic(
        block_s=bs,
        prefix_blocks_per_split=_blocks_per_split(S, bs),
        resp_blocks_per_split=_blocks_per_split(R, bs),
        queries=T,
        heads_per_kv=Q,
        sm_scale=float(H**-0.5 if sm_scale is None else sm_scale),
        interpret=resolve_interpret(interpret),
        kernel=resolve_kernel(kernel),
    )

    # Rows of one (prompt, kv head): (sample, token, head-in-group). A small copy of q, not of KV.
    q_BKGrH = q_BGTNH.reshape(B, G, T, K, Q, H).transpose(0, 3, 1, 2, 4, 5).reshape(B, K, G, T * Q, H)
    o_pre, lse_pre = prefix_partials(
        static, q_BKGrH.reshape(B, K, G * T * Q, H), prefix_k_BSKH, prefix_v_BSKH, prefix_len_B.astype(jnp.int32)
    )
    o_res, lse_res = response_partials(
        static, q_BKGrH.transpose(0, 2, 1, 3, 4), resp_k_BGRKH, resp_v_BGRKH, resp_len_BG.astype(jnp.int32)
    )
    # Both to [B, G, K, splits, rows(T*Q), ...] and merge all splits by log-sum-exp.
    o_pre = o_pre.reshape(B, K, -1, G, T * Q, H).transpose(0, 3, 1, 2, 4, 5)
    lse_pre = lse_pre.reshape(B, K, -1, G, T * Q).transpose(0, 3, 1, 2, 4)
    o_all = jnp.concatenate([o_pre, o_res], axis=3)
    lse_all = jnp.concatenate([lse_pre, lse_res], axis=3)
    w = jnp.exp(lse_all - jnp.max(lse_all, axis=3, keepdims=True))
    out_BGKrH = jnp.sum(w[..., None] * o_all, axis=3) / jnp.sum(w, axis=3)[..., None]
    out = out_BGKrH.reshape(B, G, K, T, Q, H).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(B, G, T, N, H).astype(q_BGTNH.dtype)


# ----------------------------------------------------------------------------- reference
def reference_decode_attention(
    q_BGTNH,
    prefix_k_BSKH,
    prefix_v_BSKH,
    prefix_len_B,
    resp_k_BGRKH,
    resp_v_BGRKH,
    resp_len_BG,
    *,
    sm_scale: float | None = None,
):
    """Plain-jnp decode attention with the same masking (full scores, f32 softmax)."""
    B, G, T, N, H = q_BGTNH.shape
    S, K = prefix_k_BSKH.shape[1], prefix_k_BSKH.shape[2]
    R = resp_k_BGRKH.shape[2]
    scale = H**-0.5 if sm_scale is None else sm_scale
    q = q_BGTNH.reshape(B, G, T, K, N // K, H)
    s_pre = jnp.einsum("bgtkqh,bskh->bgtkqs", q, prefix_k_BSKH, preferred_element_type=jnp.float32) * scale
    s_res = jnp.einsum("bgtkqh,bgrkh->bgtkqr", q, resp_k_BGRKH, preferred_element_type=jnp.float32) * scale
    pre_ok = (jnp.arange(S)[None, :] < prefix_len_B[:, None])[:, None, None, None, None, :]
    pos_BGT = resp_len_BG[:, :, None] - T + jnp.arange(T)[None, None, :]
    res_ok = (jnp.arange(R)[None, None, None, :] <= pos_BGT[..., None])[:, :, :, None, None, :]
    scores = jnp.concatenate([jnp.where(pre_ok, s_pre, MASK_VALUE), jnp.where(res_ok, s_res, MASK_VALUE)], axis=-1)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum(
        "bgtkqs,bskh->bgtkqh",
        probs[..., :S].astype(prefix_v_BSKH.dtype),
        prefix_v_BSKH,
        preferred_element_type=jnp.float32,
    ) + jnp.einsum(
        "bgtkqr,bgrkh->bgtkqh",
        probs[..., S:].astype(resp_v_BGRKH.dtype),
        resp_v_BGRKH,
        preferred_element_type=jnp.float32,
    )
    return out.reshape(B, G, T, N, H).astype(q_BGTNH.dtype)
