"""Pallas flash attention (forward and backward) with GQA, causal, segment-id and shared-prefix masks.

    out_BTNH = flash_attention(q_BTNH, k_BSKH, v_BSKH, causal=True)

Same semantics as `kernels.reference.reference_attention` (see `kernels/block_mask.py`), computed
block by block with an online softmax, so memory is O(T) instead of O(T*S). Fully masked blocks
are skipped (causal bounds and per-block min/max segment ids), not computed and discarded.

* Any length: q/k/v are padded to block multiples inside (padded keys are masked, padded query rows
  are sliced off and get zero cotangents); segment ids are edge-padded so block min/max stay exact.
* f32 or bf16 inputs; scores, softmax statistics and accumulators are f32, p is cast to v's dtype
  for the p@v matmul (as in the reference).
* Backward: a custom_vjp that saves q, k, v, o and the row log-sum-exp; delta = rowsum(o * do)
  in XLA, then the kernels recompute the probabilities (FlashAttention-2).

Departures from the reference: a query row with no visible key at all (inconsistent segment ids, or
T > S with causal) gets output 0 here, a uniform average over all keys in the reference; neither
value is meaningful. Layout: the wrapper transposes to [B, N, T, H] so that every block's last two
dims are (sequence block, head dim) as Mosaic (TPU) requires; Triton (GPU) is indifferent.
Two kernel shapes (`kernel=`): "loop" (`kernels/flash_loop.py`: each program loops over the other
side's blocks, the shape Triton wants; also the CPU interpret default) and "grid"
(`kernels/flash_tpu.py`: a grid over kv blocks with VMEM scratch accumulators, lane-dense
log-sum-exp rows and scalar-prefetched block runs, so on-chip buffers are bounded by the block
sizes; the default when the compile target is a TPU). Both share the masks
(`kernels/block_mask.py`) and the reference. The backend is the compile target's
(`kernels/backend.py`: the active mesh's devices), not the host's: a CPU process compiling for
TPU devices builds the Mosaic kernel. The grid kernel is compiled for TPU (libtpu compile-only
devices) by tests/test_compile_kernels.py, the loop kernel for H100 by XLA:GPU and Triton
(CUDA-plugin compile-only devices) by tests/test_compile_gpu.py. On a GPU the kernel tests run the
loop kernel compiled by Triton; on an H200 it reaches about half of cuDNN's speed (docs/benchmarks.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels import backend
from kernels.block_mask import MaskSpec
from kernels.block_sizes import FlashStatic, block_sizes, round_up
from kernels.flash_loop import flash_backward_loop, flash_forward_loop
from kernels.per_shard import run_per_shard


# ----------------------------------------------------------------------------- public wrapper
def check_inputs(q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS, shared_prefix_segment) -> None:
    if q_BTNH.ndim != 4 or k_BSKH.ndim != 4:
        raise ValueError(f"q must be [B,T,N,H] and k/v [B,S,K,H]; got {q_BTNH.shape}, {k_BSKH.shape}")
    if k_BSKH.shape != v_BSKH.shape:
        raise ValueError(f"k {k_BSKH.shape} and v {v_BSKH.shape} must have the same shape")
    B, T, N, H = q_BTNH.shape
    Bk, S, K, Hk = k_BSKH.shape
    if Bk != B or Hk != H:
        raise ValueError(f"q {q_BTNH.shape} and k {k_BSKH.shape} disagree on batch or head dim")
    if N % K:
        raise ValueError(f"query heads N={N} must be a multiple of kv heads K={K}")
    if not (q_BTNH.dtype == k_BSKH.dtype == v_BSKH.dtype):
        raise ValueError(f"q/k/v dtypes differ: {q_BTNH.dtype}, {k_BSKH.dtype}, {v_BSKH.dtype}")
    if not jnp.issubdtype(q_BTNH.dtype, jnp.floating):
        raise ValueError(f"q/k/v must be floating point, got {q_BTNH.dtype}")
    if (q_segment_ids_BT is None) != (kv_segment_ids_BS is None):
        raise ValueError("q_segment_ids_BT and kv_segment_ids_BS must be given together")
    if q_segment_ids_BT is None and shared_prefix_segment is not None:
        raise ValueError("shared_prefix_segment needs segment ids")
    if q_segment_ids_BT is not None and (q_segment_ids_BT.shape != (B, T) or kv_segment_ids_BS.shape != (B, S)):
        raise ValueError(
            f"segment ids must be [B,T]={(B, T)} and [B,S]={(B, S)}; got "
            f"{q_segment_ids_BT.shape}, {kv_segment_ids_BS.shape}"
        )


def flash_attention(
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
    interpret: bool | None = None,
    kernel: str | None = None,
    mesh=None,
    batch_axis: str | tuple[str, ...] | None = None,
    head_axis: str | None = None,
):
    """Flash attention with the semantics of `reference_attention`; returns out_BTNH (q's dtype).

    kernel: "grid" (Mosaic shape) or "loop" (Triton shape); default from the compile target.
    mesh/batch_axis/head_axis: under a multi-device mesh with automatic (not Explicit) axes, run
    the kernel per shard of the batch over `batch_axis` and of the heads over `head_axis`: XLA
    cannot partition a Mosaic kernel by itself ("Mosaic kernels cannot be automatically
    partitioned"), so without them a TPU mesh of more than one chip fails to compile."""
    check_inputs(q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS, shared_prefix_segment)
    B, T, N, H = q_BTNH.shape
    S = k_BSKH.shape[1]
    interpret = backend.resolve_interpret(interpret)
    kernel = backend.resolve_kernel(kernel)
    blocks = block_sizes(T, S, block_q, block_k, backend.target_backend())
    static = FlashStatic(
        kernel=kernel,
        mask=MaskSpec(
            causal=causal,
            q_len=T,
            kv_len=S,
            has_segments=q_segment_ids_BT is not None,
            shared_prefix_segment=shared_prefix_segment,
        ),
        sm_scale=float(H**-0.5 if sm_scale is None else sm_scale),
        block_q=blocks.block_q,
        block_k=blocks.block_k,
        interpret=interpret,
    )
    args = (q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS)
    return run_per_shard(
        functools.partial(_flash_local, static), args, mesh=mesh, batch_axis=batch_axis, head_axis=head_axis
    )


def _flash_local(static: FlashStatic, q_BTNH, k_BSKH, v_BSKH, q_seg_BT, kv_seg_BS):
    q, k, v, q_seg, kv_seg = pad_inputs(static, q_BTNH, k_BSKH, v_BSKH, q_seg_BT, kv_seg_BS)
    out_BNTH = _flash_core(static, q, k, v, q_seg, kv_seg)
    return out_BNTH[:, :, : static.mask.q_len].transpose(0, 2, 1, 3)


def pad_inputs(static: FlashStatic, q_BTNH, k_BSKH, v_BSKH, q_seg_BT, kv_seg_BS):
    """[B,T,N,H] -> padded [B,N,Tp,H] (k/v alike); segment ids edge-padded to [B,Tp,1]/[B,1,Sp]."""
    T, S = static.mask.q_len, static.mask.kv_len
    Tp, Sp = round_up(T, static.block_q), round_up(S, static.block_k)

    def pad_seq(x, n):
        return jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

    q, k, v = pad_seq(q_BTNH, Tp), pad_seq(k_BSKH, Sp), pad_seq(v_BSKH, Sp)
    if q_seg_BT is not None:  # a column [B, Tp, 1] and a row [B, 1, Sp]: 2-D blocks for Mosaic
        q_seg_BT = jnp.pad(q_seg_BT.astype(jnp.int32), ((0, 0), (0, Tp - T)), mode="edge")
        kv_seg_BS = jnp.pad(kv_seg_BS.astype(jnp.int32), ((0, 0), (0, Sp - S)), mode="edge")
        q_seg_BT, kv_seg_BS = q_seg_BT[:, :, None], kv_seg_BS[:, None, :]
    return q, k, v, q_seg_BT, kv_seg_BS


# ----------------------------------------------------------------------------- custom_vjp
@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash_core(static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS):
    return flash_forward(static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS)[0]


def _flash_core_fwd(static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS):
    out_BNTH, lse_BNT = flash_forward(static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS)
    return out_BNTH, (q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS, out_BNTH, lse_BNT)


def _flash_core_bwd(static, res, do_BNTH):
    q, k, v, q_seg, kv_seg, out, lse = res
    delta_BNT1 = jnp.sum(out.astype(jnp.float32) * do_BNTH.astype(jnp.float32), axis=-1, keepdims=True)
    dq, dk, dv = flash_backward(static, q, k, v, q_seg, kv_seg, do_BNTH, lse, delta_BNT1)
    return dq, dk, dv, None, None


_flash_core.defvjp(_flash_core_fwd, _flash_core_bwd)


def flash_forward(static: FlashStatic, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS, count_blocks: bool = False):
    """Padded forward: (out_BNTH, lse_BNT1[, computed-block count per q block [B,N,nq]])."""
    if static.kernel == "grid":
        if count_blocks:
            raise ValueError("count_blocks is a loop-kernel debug output")
        from kernels.flash_tpu import flash_forward_grid

        return flash_forward_grid(static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS)
    return flash_forward_loop(static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS, count_blocks)


def flash_backward(
    static: FlashStatic, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS, do_BNTH, lse_BNT1, delta_BNT1, grad_dtype=None
):
    """Padded backward given the log-sum-exp and delta = rowsum(o * do): (dq, dk, dv).

    grad_dtype: dtype of the gradients (default: the inputs'); ring attention asks for f32 to
    accumulate partial gradients over its steps."""
    if static.kernel == "grid":
        from kernels.flash_tpu_bwd import flash_backward_grid

        return flash_backward_grid(
            static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS, do_BNTH, lse_BNT1, delta_BNT1, grad_dtype
        )
    return flash_backward_loop(
        static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS, do_BNTH, lse_BNT1, delta_BNT1, grad_dtype
    )
