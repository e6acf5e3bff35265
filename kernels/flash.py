"""Pallas flash attention (forward and backward) with GQA, causal, segment-id and shared-prefix masks.

    out_BTNH = flash_attention(q_BTNH, k_BSKH, v_BSKH, causal=True)

Same semantics as `kernels.reference.reference_attention` (see `kernels/block_mask.py`), computed
block by block with an online softmax, so memory is O(T) instead of O(T*S):

* Forward: grid (batch, query head, q block); each program keeps its q block resident and loops
  over kv blocks, reading the kv head `n // (N // K)` of its query head (GQA without repeating K/V
  in memory). It writes the output and the row log-sum-exp (the only residual besides q/k/v/o).
* Backward (FlashAttention-2): delta = rowsum(o * do) in XLA, then two kernels that recompute the
  probabilities from the saved log-sum-exp: dq over (batch, query head, q block), and dk/dv over
  (batch, KV head, kv block) looping over the query heads of the group, so dk/dv are accumulated
  per KV head directly (no [.., N, S, H] intermediate summed afterwards).
* Fully masked blocks are skipped: the kv loop bounds follow causality, and inside the loop a
  block-level predicate (`block_mask.block_visible`: causal position and per-block min/max segment
  ids) guards the block with `lax.cond`, so skipped blocks load nothing and do no matmuls.
* Any length: q/k/v are padded to block multiples inside (padded keys are masked, padded query rows
  are sliced off and get zero cotangents); segment ids are edge-padded so block min/max stay exact.
* f32 or bf16 inputs; scores, softmax statistics and accumulators are f32, p is cast to v's dtype
  for the p@v matmul (as in the reference).

Departures from the reference: a query row with no visible key at all (inconsistent segment ids, or
T > S with causal) gets output 0 here, a uniform average over all keys in the reference; neither
value is meaningful. Layout: the wrapper transposes to [B, N, T, H] so that every block's last two
dims are (sequence block, head dim) as Mosaic (TPU) requires; Triton (GPU) is indifferent.
Two kernel shapes (`kernel=`): "loop" (above: each program loops over the other side's blocks,
the shape Triton wants; also the CPU interpret default) and "grid" (`kernels/flash_tpu.py`: a
grid over kv blocks with VMEM scratch accumulators, lane-dense log-sum-exp rows and
scalar-prefetched block runs, so on-chip buffers are bounded by the block sizes; the default
when the compile target is a TPU). Both share the masks (`kernels/block_mask.py`) and the
reference. The backend is the compile target's (`target_backend`: the active mesh's devices),
not the host's: a CPU process compiling for TPU devices builds the Mosaic kernel. The grid
kernel is compiled for TPU (libtpu compile-only devices) by tests/test_compile_kernels.py, the
loop kernel for H100 by XLA:GPU and Triton (CUDA-plugin compile-only devices) by
tests/test_compile_gpu.py; nothing has been run or timed on an accelerator.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.sharding import NamedSharding, PartitionSpec as P

from kernels.block_mask import MaskSpec, block_visible, element_mask
from kernels.kernel_math import dot, dot_nt, dot_tn, iota
from kernels.reference import MASK_VALUE

# ----------------------------------------------------------------------------- constants
# Default (block_q, block_k) per backend. Triton wants powers of two; Mosaic wants the kv block
# (the lane dim of the [bq, bk] score tile) a multiple of 128 and bq a multiple of 8.
DEFAULT_BLOCKS = {"cpu": (128, 128), "gpu": (64, 64), "tpu": (128, 128)}
MIN_BLOCK = 8


# ----------------------------------------------------------------------------- block sizes
@dataclasses.dataclass(frozen=True)
class BlockSizes:
    block_q: int
    block_k: int


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _next_pow2(x: int) -> int:
    return 1 << max(x - 1, 0).bit_length()


def _check_block(name: str, b, backend: str, lane: bool) -> None:
    if not isinstance(b, int) or isinstance(b, bool) or b <= 0 or b % MIN_BLOCK:
        raise ValueError(f"{name}={b!r} must be a positive multiple of {MIN_BLOCK}")
    if backend == "gpu" and b & (b - 1):
        raise ValueError(f"{name}={b} must be a power of two on gpu (Triton)")
    if backend == "tpu" and lane and b % 128:
        raise ValueError(f"{name}={b} must be a multiple of 128 on tpu (Mosaic lane dim)")


def block_sizes(T: int, S: int, block_q: int | None, block_k: int | None,
                backend: str) -> BlockSizes:
    """Validated block sizes; defaults shrink to the (rounded-up) sequence length."""
    default_q, default_k = DEFAULT_BLOCKS.get(backend, DEFAULT_BLOCKS["cpu"])

    def shrink(default: int, length: int, lane: bool) -> int:
        if backend == "gpu":
            return min(default, max(16, _next_pow2(length)))
        if backend == "tpu" and lane:
            return default
        return min(default, _round_up(length, MIN_BLOCK))

    # On TPU q blocks are lanes too: the log-sum-exp/delta rows are [1, block_q] blocks.
    bq = shrink(default_q, T, lane=backend == "tpu") if block_q is None else block_q
    bk = shrink(default_k, S, lane=True) if block_k is None else block_k
    _check_block("block_q", bq, backend, lane=backend == "tpu")
    _check_block("block_k", bk, backend, lane=True)
    return BlockSizes(bq, bk)


# ----------------------------------------------------------------------------- public wrapper
@dataclasses.dataclass(frozen=True)
class FlashStatic:
    """Everything static about one call (hashable: it is a custom_vjp nondiff argument)."""

    mask: MaskSpec
    sm_scale: float
    block_q: int
    block_k: int
    interpret: bool
    kernel: str = "loop"  # "loop" (Triton/CPU shape) | "grid" (Mosaic shape, kernels/flash_tpu.py)


KERNELS = ("loop", "grid")


def check_inputs(q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS,
                  shared_prefix_segment) -> None:
    if q_BTNH.ndim != 4 or k_BSKH.ndim != 4:
        raise ValueError(f"q must be [B,T,N,H] and k/v [B,S,K,H]; got {q_BTNH.shape}, "
                         f"{k_BSKH.shape}")
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
    if q_segment_ids_BT is not None:
        if q_segment_ids_BT.shape != (B, T) or kv_segment_ids_BS.shape != (B, S):
            raise ValueError(f"segment ids must be [B,T]={(B, T)} and [B,S]={(B, S)}; got "
                             f"{q_segment_ids_BT.shape}, {kv_segment_ids_BS.shape}")


_TARGET = contextvars.ContextVar("kernels_target_backend", default=None)


@contextlib.contextmanager
def use_target(backend: str):
    """Build kernels for `backend` ("cpu" | "gpu" | "tpu") inside this block, whatever the mesh."""
    token = _TARGET.set(_platform_kind(backend))
    try:
        yield
    finally:
        _TARGET.reset(token)


def _platform_kind(platform: str) -> str:
    return {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)


def target_backend() -> str:
    """The platform kernels are built for ("cpu" | "gpu" | "tpu"): the compile target, not the
    host. In order: `use_target`, the devices of the active mesh (`jax.set_mesh`, which every
    step of the run traces under; a TPU mesh of libtpu compile-only devices in a CPU process is
    "tpu"), then `jax.default_backend()`."""
    forced = _TARGET.get()
    if forced is not None:
        return forced
    abstract = jax.sharding.get_abstract_mesh()
    device = None if abstract.empty else getattr(abstract, "abstract_device", None)
    if device is not None:
        return _platform_kind(device.platform)
    return _platform_kind(jax.default_backend())


def default_kernel(backend: str) -> str:
    return "grid" if backend == "tpu" else "loop"


def resolve_interpret(interpret: bool | None) -> bool:
    return target_backend() == "cpu" if interpret is None else bool(interpret)


def resolve_kernel(kernel: str | None) -> str:
    kernel = default_kernel(target_backend()) if kernel is None else kernel
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} must be one of {KERNELS}")
    return kernel


def compiler_params(num_grid_dims: int, interpret: bool):
    """Backend-specific Pallas compiler parameters (selects Triton rather than Mosaic GPU)."""
    backend = target_backend()
    if interpret or backend == "cpu":
        return None
    if backend == "gpu":
        from jax.experimental.pallas import triton as pltriton
        return pltriton.CompilerParams(num_warps=4, num_stages=2)
    if backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu
        # Every program writes its own output block (no cross-program accumulation).
        return pltpu.CompilerParams(dimension_semantics=("parallel",) * num_grid_dims)
    return None


def flash_attention(q_BTNH, k_BSKH, v_BSKH, *, causal: bool = True, q_segment_ids_BT=None,
                    kv_segment_ids_BS=None, shared_prefix_segment: int | None = None,
                    sm_scale: float | None = None, block_q: int | None = None,
                    block_k: int | None = None, interpret: bool | None = None,
                    kernel: str | None = None, mesh=None,
                    batch_axis: str | tuple[str, ...] | None = None, head_axis: str | None = None):
    """Flash attention with the semantics of `reference_attention`; returns out_BTNH (q's dtype).

    kernel: "grid" (Mosaic shape) or "loop" (Triton shape); default from the compile target.
    mesh/batch_axis/head_axis: under a multi-device mesh with automatic (not Explicit) axes, run
    the kernel per shard of the batch over `batch_axis` and of the heads over `head_axis`: XLA
    cannot partition a Mosaic kernel by itself ("Mosaic kernels cannot be automatically
    partitioned"), so without them a TPU mesh of more than one chip fails to compile."""
    check_inputs(q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS,
                  shared_prefix_segment)
    B, T, N, H = q_BTNH.shape
    S = k_BSKH.shape[1]
    interpret = resolve_interpret(interpret)
    kernel = resolve_kernel(kernel)
    blocks = block_sizes(T, S, block_q, block_k, target_backend())
    static = FlashStatic(kernel=kernel,
        mask=MaskSpec(causal=causal, q_len=T, kv_len=S,
                      has_segments=q_segment_ids_BT is not None,
                      shared_prefix_segment=shared_prefix_segment),
        sm_scale=float(H**-0.5 if sm_scale is None else sm_scale),
        block_q=blocks.block_q, block_k=blocks.block_k, interpret=interpret)
    args = (q_BTNH, k_BSKH, v_BSKH, q_segment_ids_BT, kv_segment_ids_BS)
    return run_per_shard(functools.partial(_flash_local, static), args, mesh=mesh,
                         batch_axis=batch_axis, head_axis=head_axis)


def run_per_shard(local, args, *, mesh=None, batch_axis=None, head_axis=None):
    """local(q, k, v, q_seg, kv_seg) once, or per shard of the batch and heads: under `mesh`
    (automatic axes) over batch_axis / head_axis, or over the Explicit axes q is sharded on.
    Attention is independent per batch row and per kv-head group, so no shard talks to another
    (shared by the flash and blockwise kernels; a sharded sequence needs ring_attention)."""
    q_BTNH, _, _, q_segment_ids_BT, kv_segment_ids_BS = args
    explicit_mesh, spec = _explicit_sharding(q_BTNH)
    if explicit_mesh is None and mesh is not None and mesh.size > 1:
        qkv, seg = P(batch_axis, None, head_axis, None), P(batch_axis, None)
        specs = (qkv, qkv, qkv, seg if q_segment_ids_BT is not None else None,
                 seg if kv_segment_ids_BS is not None else None)
        return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=qkv,
                             check_vma=False)(*args)
    mesh = explicit_mesh
    if mesh is None:
        return local(*args)
    # Explicitly sharded inputs (the model's activations): batch and heads are independent, so
    # run the kernel per shard. A sharded sequence needs ring_attention instead.
    if spec[1] is not None:
        raise ValueError(f"attention: q's sequence dim is sharded over {spec[1]!r}; "
                         f"use ring_attention for sequence parallelism")
    qkv, seg = P(spec[0], None, spec[2], None), P(spec[0], None)
    specs = (qkv, qkv, qkv, seg if q_segment_ids_BT is not None else None,
             seg if kv_segment_ids_BS is not None else None)
    args = [x if s is None else jax.reshard(x, NamedSharding(mesh, s)) for x, s in zip(args, specs)]
    # check_vma=False: jax 0.10.2's Pallas interpreter loses the varying-axes annotation.
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=qkv, check_vma=False)(*args)


def _explicit_sharding(x):
    """(mesh, per-dim spec) when x is sharded over Explicit mesh axes at trace time, else None."""
    sharding = jax.typeof(x).sharding
    spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
    if all(s is None for s in spec):
        return None, spec
    return sharding.mesh, spec


def _flash_local(static: FlashStatic, q_BTNH, k_BSKH, v_BSKH, q_seg_BT, kv_seg_BS):
    q, k, v, q_seg, kv_seg = pad_inputs(static, q_BTNH, k_BSKH, v_BSKH, q_seg_BT, kv_seg_BS)
    out_BNTH = _flash_core(static, q, k, v, q_seg, kv_seg)
    return out_BNTH[:, :, :static.mask.q_len].transpose(0, 2, 1, 3)


def pad_inputs(static: FlashStatic, q_BTNH, k_BSKH, v_BSKH, q_seg_BT, kv_seg_BS):
    """[B,T,N,H] -> padded [B,N,Tp,H] (k/v alike); segment ids edge-padded to [B,Tp,1]/[B,1,Sp]."""
    T, S = static.mask.q_len, static.mask.kv_len
    Tp, Sp = _round_up(T, static.block_q), _round_up(S, static.block_k)

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
    delta_BNT1 = jnp.sum(out.astype(jnp.float32) * do_BNTH.astype(jnp.float32), axis=-1,
                         keepdims=True)
    dq, dk, dv = flash_backward(static, q, k, v, q_seg, kv_seg, do_BNTH, lse, delta_BNT1)
    return dq, dk, dv, None, None


_flash_core.defvjp(_flash_core_fwd, _flash_core_bwd)


def _out(shape, dtype, like):
    """Output shape for pallas_call; inside shard_map (ring attention) it must say how it varies
    over the mesh axes, which is how its input `like` varies."""
    return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=jax.typeof(like).mat)


def _q_seg_spec(block: int, index):
    return pl.BlockSpec((None, block, 1), index)


def _kv_seg_spec(block: int, index):
    return pl.BlockSpec((None, 1, block), index)


def flash_forward(static: FlashStatic, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS,
                  count_blocks: bool = False):
    """Padded forward: (out_BNTH, lse_BNT1[, computed-block count per q block [B,N,nq]])."""
    if static.kernel == "grid":
        if count_blocks:
            raise ValueError("count_blocks is a loop-kernel debug output")
        from kernels.flash_tpu import flash_forward_grid
        return flash_forward_grid(static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS)
    B, N, Tp, H = q_BNTH.shape
    K, Sp = k_BKSH.shape[1], k_BKSH.shape[2]
    G, bq = N // K, static.block_q
    seg = q_seg_BT is not None
    kv_full = pl.BlockSpec((None, None, Sp, H), lambda b, n, i: (b, lax.div(n, G), 0, 0))
    in_specs = [pl.BlockSpec((None, None, bq, H), lambda b, n, i: (b, n, i, 0)), kv_full, kv_full,
                _q_seg_spec(bq, lambda b, n, i: (b, i, 0)) if seg else None,
                _kv_seg_spec(Sp, lambda b, n, i: (b, 0, 0)) if seg else None]
    row_spec = pl.BlockSpec((None, None, bq, 1), lambda b, n, i: (b, n, i, 0))
    out_shape = [_out(q_BNTH.shape, q_BNTH.dtype, q_BNTH),
                 _out((B, N, Tp, 1), jnp.float32, q_BNTH)]
    out_specs = [pl.BlockSpec((None, None, bq, H), lambda b, n, i: (b, n, i, 0)), row_spec]
    if count_blocks:  # debug output: number of kv blocks computed, broadcast over the q block
        out_shape.append(_out((B, N, Tp, 1), jnp.int32, q_BNTH))
        out_specs.append(row_spec)
    outs = pl.pallas_call(
        functools.partial(_fwd_kernel, static=static),
        grid=(B, N, Tp // bq), in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        interpret=static.interpret, name="flash_attention_fwd",
        compiler_params=compiler_params(3, static.interpret),
    )(q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS)
    if count_blocks:
        return outs[0], outs[1], outs[2][:, :, ::bq, 0]
    return outs[0], outs[1]


def flash_backward(static: FlashStatic, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS, do_BNTH,
                   lse_BNT1, delta_BNT1, grad_dtype=None):
    """Padded backward given the log-sum-exp and delta = rowsum(o * do): (dq, dk, dv).

    grad_dtype: dtype of the gradients (default: the inputs'); ring attention asks for f32 to
    accumulate partial gradients over its steps."""
    if static.kernel == "grid":
        from kernels.flash_tpu import flash_backward_grid
        return flash_backward_grid(static, q_BNTH, k_BKSH, v_BKSH, q_seg_BT, kv_seg_BS,
                                   do_BNTH, lse_BNT1, delta_BNT1, grad_dtype)
    B, N, Tp, H = q_BNTH.shape
    K, Sp = k_BKSH.shape[1], k_BKSH.shape[2]
    G, bq, bk = N // K, static.block_q, static.block_k
    seg = q_seg_BT is not None

    q_blk = pl.BlockSpec((None, None, bq, H), lambda b, n, i: (b, n, i, 0))
    kv_full = pl.BlockSpec((None, None, Sp, H), lambda b, n, i: (b, lax.div(n, G), 0, 0))
    row_blk = pl.BlockSpec((None, None, bq, 1), lambda b, n, i: (b, n, i, 0))
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, static=static),
        grid=(B, N, Tp // bq),
        in_specs=[q_blk, kv_full, kv_full, q_blk, row_blk, row_blk,
                  _q_seg_spec(bq, lambda b, n, i: (b, i, 0)) if seg else None,
                  _kv_seg_spec(Sp, lambda b, n, i: (b, 0, 0)) if seg else None],
        out_specs=q_blk, out_shape=_out(q_BNTH.shape, grad_dtype or q_BNTH.dtype, q_BNTH),
        interpret=static.interpret, name="flash_attention_dq",
        compiler_params=compiler_params(3, static.interpret),
    )(q_BNTH, k_BKSH, v_BKSH, do_BNTH, lse_BNT1, delta_BNT1, q_seg_BT, kv_seg_BS)

    # One program per (batch, kv head, kv block): the G query heads of the group are a block.
    q_group = pl.BlockSpec((None, G, Tp, H), lambda b, h, j: (b, h, 0, 0))
    row_group = pl.BlockSpec((None, G, Tp, 1), lambda b, h, j: (b, h, 0, 0))
    kv_blk = pl.BlockSpec((None, None, bk, H), lambda b, h, j: (b, h, j, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_dkdv_kernel, static=static, group=G),
        grid=(B, K, Sp // bk),
        in_specs=[q_group, kv_blk, kv_blk, q_group, row_group, row_group,
                  _q_seg_spec(Tp, lambda b, h, j: (b, 0, 0)) if seg else None,
                  _kv_seg_spec(bk, lambda b, h, j: (b, 0, j)) if seg else None],
        out_specs=[kv_blk, kv_blk],
        out_shape=[_out(k_BKSH.shape, grad_dtype or k_BKSH.dtype, q_BNTH),
                   _out(v_BKSH.shape, grad_dtype or v_BKSH.dtype, q_BNTH)],
        interpret=static.interpret, name="flash_attention_dkdv",
        compiler_params=compiler_params(3, static.interpret),
    )(q_BNTH, k_BKSH, v_BKSH, do_BNTH, lse_BNT1, delta_BNT1, q_seg_BT, kv_seg_BS)
    return dq, dk, dv


# ----------------------------------------------------------------------------- kernels








def _column(n: int, start):  # [n, 1] positions
    return start + lax.broadcasted_iota(jnp.int32, (n, 1), 0)


def _row(n: int, start):  # [1, n] positions
    return start + lax.broadcasted_iota(jnp.int32, (1, n), 1)


def _seg_range(seg):
    return None if seg is None else (jnp.min(seg), jnp.max(seg))


def _kv_padded(static: FlashStatic) -> bool:
    return static.mask.kv_len % static.block_k != 0


def _kv_block_hi(static: FlashStatic, q_start, num_kv_blocks: int):
    """One past the last kv block a q block starting at q_start can see (causal bound)."""
    if not static.mask.causal:
        return num_kv_blocks
    last_key = q_start + static.block_q + static.mask.causal_offset  # exclusive
    return jnp.clip(lax.div(jnp.maximum(last_key, 0) + static.block_k - 1, static.block_k),
                    0, num_kv_blocks)


def _q_block_lo(static: FlashStatic, k_start):
    """First q block that can see a kv block starting at k_start (causal bound)."""
    if not static.mask.causal:
        return 0
    return lax.div(jnp.maximum(k_start - static.mask.causal_offset, 0), static.block_q)


def _masked_scores(static, q, k, q_pos, k_pos, q_seg, k_seg):
    s = dot_nt(q, k) * static.sm_scale
    mask = element_mask(static.mask, q_pos, k_pos, q_seg, k_seg, kv_padded=_kv_padded(static))
    return jnp.where(mask, s, MASK_VALUE), mask


# Row statistics (m, l, lse, delta) are [rows, 1] columns and segment ids are a [bq, 1] column
# against a [1, bk] row, so every value in the kernels is 2-D (Mosaic's native layout).
def _fwd_kernel(q_ref, k_ref, v_ref, q_seg_ref, kv_seg_ref, o_ref, lse_ref, *count_ref, static):
    bq, bk = static.block_q, static.block_k
    q_start = pl.program_id(2) * bq
    q = q_ref[...]
    q_pos = _column(bq, q_start)
    q_seg = None if q_seg_ref is None else q_seg_ref[...]
    q_range = _seg_range(q_seg)

    def body(j, carry):
        k_start = j * bk
        k_slice = pl.ds(pl.multiple_of(k_start, bk), bk)
        k_seg = None if kv_seg_ref is None else kv_seg_ref[:, k_slice]
        visible = block_visible(static.mask, q_start, k_start, bq, bk, q_range,
                                _seg_range(k_seg))

        def compute(carry):
            acc, m, l, n = carry
            v = v_ref[k_slice, :]
            s, mask = _masked_scores(static, q, k_ref[k_slice, :], q_pos, _row(bk, k_start),
                                     q_seg, k_seg)
            m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
            p = jnp.where(mask, jnp.exp(s - m_new), 0.0)
            alpha = jnp.exp(m - m_new)
            acc = alpha * acc + dot(p.astype(v.dtype), v)
            return acc, m_new, alpha * l + jnp.sum(p, axis=1, keepdims=True), n + 1

        return lax.cond(visible, compute, lambda c: c, carry)

    H = q.shape[-1]
    init = (jnp.zeros((bq, H), jnp.float32), jnp.full((bq, 1), MASK_VALUE, jnp.float32),
            jnp.zeros((bq, 1), jnp.float32), jnp.int32(0))
    hi = _kv_block_hi(static, q_start, k_ref.shape[0] // bk)
    acc, m, l, n = lax.fori_loop(0, hi, body, init)
    empty = l == 0.0  # no visible key in any computed block
    l_safe = jnp.where(empty, 1.0, l)
    o_ref[...] = (acc / l_safe).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, MASK_VALUE, m + jnp.log(l_safe))
    if count_ref:
        count_ref[0][...] = jnp.full((bq, 1), n, jnp.int32)


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, q_seg_ref, kv_seg_ref, dq_ref,
               *, static):
    bq, bk = static.block_q, static.block_k
    q_start = pl.program_id(2) * bq
    q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
    q_pos = _column(bq, q_start)
    q_seg = None if q_seg_ref is None else q_seg_ref[...]
    q_range = _seg_range(q_seg)

    def body(j, dq):
        k_start = j * bk
        k_slice = pl.ds(pl.multiple_of(k_start, bk), bk)
        k_seg = None if kv_seg_ref is None else kv_seg_ref[:, k_slice]
        visible = block_visible(static.mask, q_start, k_start, bq, bk, q_range,
                                _seg_range(k_seg))

        def compute(dq):
            k, v = k_ref[k_slice, :], v_ref[k_slice, :]
            s, mask = _masked_scores(static, q, k, q_pos, _row(bk, k_start), q_seg, k_seg)
            p = jnp.where(mask, jnp.exp(s - lse), 0.0)
            ds = p * (dot_nt(do, v) - delta)
            return dq + dot(ds.astype(k.dtype), k)

        return lax.cond(visible, compute, lambda d: d, dq)

    hi = _kv_block_hi(static, q_start, k_ref.shape[0] // bk)
    dq = lax.fori_loop(0, hi, body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * static.sm_scale).astype(dq_ref.dtype)


def _dkdv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, q_seg_ref, kv_seg_ref, dk_ref,
                 dv_ref, *, static, group):
    bq, bk = static.block_q, static.block_k
    k_start = pl.program_id(2) * bk
    k, v = k_ref[...], v_ref[...]
    k_pos = _row(bk, k_start)
    k_seg = None if kv_seg_ref is None else kv_seg_ref[...]
    k_range = _seg_range(k_seg)

    def body(i, carry):
        q_start = i * bq
        q_slice = pl.ds(pl.multiple_of(q_start, bq), bq)
        q_seg = None if q_seg_ref is None else q_seg_ref[q_slice, :]
        visible = block_visible(static.mask, q_start, k_start, bq, bk, _seg_range(q_seg),
                                k_range)

        def compute(carry):
            mask = element_mask(static.mask, _column(bq, q_start), k_pos, q_seg, k_seg,
                                kv_padded=_kv_padded(static))

            def head(g, carry):  # the query heads sharing this kv head
                dk, dv = carry
                q, do = q_ref[g, q_slice, :], do_ref[g, q_slice, :]
                lse, delta = lse_ref[g, q_slice, :], delta_ref[g, q_slice, :]
                s = jnp.where(mask, dot_nt(q, k) * static.sm_scale, MASK_VALUE)
                p = jnp.where(mask, jnp.exp(s - lse), 0.0)
                dv = dv + dot_tn(p.astype(do.dtype), do)
                ds = p * (dot_nt(do, v) - delta)
                return dk + dot_tn(ds.astype(q.dtype), q), dv

            return lax.fori_loop(0, group, head, carry)

        return lax.cond(visible, compute, lambda c: c, carry)

    zeros = jnp.zeros(k.shape, jnp.float32)
    lo = _q_block_lo(static, k_start)
    dk, dv = lax.fori_loop(lo, q_ref.shape[1] // bq, body, (zeros, zeros))
    dk_ref[...] = (dk * static.sm_scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)
