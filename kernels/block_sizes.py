"""Block sizes of the flash kernels (per-backend defaults, shrunk to the sequence, validated) and
`FlashStatic`, everything static about one flash call (blocks, mask, scale, kernel shape).

Triton wants powers of two; Mosaic wants the kv block (the lane dim of the [bq, bk] score tile)
a multiple of 128 and bq a multiple of 8.
"""

from __future__ import annotations

import dataclasses

from kernels.block_mask import MaskSpec

# Default (block_q, block_k) per backend.
DEFAULT_BLOCKS = {"cpu": (128, 128), "gpu": (64, 64), "tpu": (128, 128)}
MIN_BLOCK = 8


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    block_q: int
    block_k: int


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def next_pow2(x: int) -> int:
    return 1 << max(x - 1, 0).bit_length()


def _check_block(name: str, b, backend: str, lane: bool) -> None:
    if not isinstance(b, int) or isinstance(b, bool) or b <= 0 or b % MIN_BLOCK:
        raise ValueError(f"{name}={b!r} must be a positive multiple of {MIN_BLOCK}")
    if backend == "gpu" and b & (b - 1):
        raise ValueError(f"{name}={b} must be a power of two on gpu (Triton)")
    if backend == "tpu" and lane and b % 128:
        raise ValueError(f"{name}={b} must be a multiple of 128 on tpu (Mosaic lane dim)")


def block_sizes(T: int, S: int, block_q: int | None, block_k: int | None, backend: str) -> BlockSizes:
    """Validated block sizes; defaults shrink to the (rounded-up) sequence length."""
    default_q, default_k = DEFAULT_BLOCKS.get(backend, DEFAULT_BLOCKS["cpu"])

    def shrink(default: int, length: int, lane: bool) -> int:
        if backend == "gpu":
            return min(default, max(16, next_pow2(length)))
        if backend == "tpu" and lane:
            return default
        return min(default, round_up(length, MIN_BLOCK))

    # On TPU q blocks are lanes too: the log-sum-exp/delta rows are [1, block_q] blocks.
    bq = shrink(default_q, T, lane=backend == "tpu") if block_q is None else block_q
    bk = shrink(default_k, S, lane=True) if block_k is None else block_k
    _check_block("block_q", bq, backend, lane=backend == "tpu")
    _check_block("block_k", bk, backend, lane=True)
    return BlockSizes(bq, bk)


@dataclasses.dataclass(frozen=True)
class FlashStatic:
    """Everything static about one call (hashable: it is a custom_vjp nondiff argument)."""

    mask: MaskSpec
    sm_scale: float
    block_q: int
    block_k: int
    interpret: bool
    kernel: str = "loop"  # "loop" (Triton/CPU shape) | "grid" (Mosaic shape, kernels/flash_tpu.py)
