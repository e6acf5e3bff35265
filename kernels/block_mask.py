"""Block-level and element-level masks shared by the flash, decode and ring kernels.

The semantics are those of `kernels.reference.attention_mask` (causal with queries being the last
T positions, segment ids, the shared-prefix rule). Here they are split in two levels:

* `block_visible`: can ANY (query, key) pair of a q block x kv block be visible? Computed from the
  block's first positions and the min/max segment id in each block. Conservative (never says
  False for a block with a visible pair) and exact for contiguous segment layouts such as packed
  sequences and the GRPO `[prompt | resp_1 | ... | resp_G]` layout. Kernels skip blocks where it
  is False: no loads, no matmuls.
* `element_mask`: the exact [bq, bk] mask inside a block that is computed.

Both are written with `&`/`|` only, so the same function runs on traced scalars inside a Pallas
kernel and on numpy/python ints in `block_schedule` (what the tests check the kernel against).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """Static masking parameters for one attention call (real, unpadded lengths)."""

    causal: bool
    q_len: int  # T
    kv_len: int  # S
    has_segments: bool
    shared_prefix_segment: int | None

    @property
    def causal_offset(self) -> int:
        # Queries are the last T positions of the key sequence (reference semantics).
        return self.kv_len - self.q_len


def block_visible(spec: MaskSpec, q_start, k_start, bq: int, bk: int, q_seg_range=None, k_seg_range=None):
    """True unless every pair of the block [q_start, +bq) x [k_start, +bk) is masked.

    q_seg_range/k_seg_range: (min, max) segment id over the block (None without segments).
    """
    visible = k_start < spec.kv_len
    if spec.causal:
        visible = visible & (k_start <= q_start + (bq - 1) + spec.causal_offset)
    if spec.has_segments:
        q_min, q_max = q_seg_range
        k_min, k_max = k_seg_range
        seg_ok = (q_min <= k_max) & (k_min <= q_max)
        p = spec.shared_prefix_segment
        if p is not None:
            q_has_non_pad = (q_min != 0) | (q_max != 0)
            seg_ok = seg_ok | ((k_min <= p) & (p <= k_max) & q_has_non_pad)
        visible = visible & seg_ok
    return visible


def element_mask(spec: MaskSpec, q_pos, k_pos, q_seg=None, k_seg=None, *, kv_padded: bool, shape=None):
    """Exact [bq, bk] mask from a column of query positions q_pos [bq, 1] and a row of key
    positions k_pos [1, bk] (segment ids alike). 2-D throughout, as Mosaic (TPU) prefers.
    `shape`: the result's shape when the operands broadcast otherwise (the TPU backward passes
    a query row [1, bq] and a key column [bk, 1] for a transposed [bk, bq] mask)."""
    mask = None

    def _and(a, b):
        return b if a is None else a & b

    if kv_padded:  # keys past the real length only exist because we padded to a block multiple
        mask = _and(mask, k_pos < spec.kv_len)
    if spec.causal:
        mask = _and(mask, k_pos <= q_pos + spec.causal_offset)
    if spec.has_segments:
        seg_ok = q_seg == k_seg
        p = spec.shared_prefix_segment
        if p is not None:
            seg_ok = seg_ok | ((k_seg == p) & (q_seg != 0))
        mask = _and(mask, seg_ok)
    shape = (q_pos.shape[0], k_pos.shape[1]) if shape is None else shape
    if mask is None:
        mask = jnp.ones(shape, dtype=bool)
    return jnp.broadcast_to(mask, shape)


def _block_ranges(seg_L: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-block (min, max) of a 1-D segment array, edge-padded to a block multiple."""
    n = -(-seg_L.shape[0] // block)
    padded = np.pad(seg_L, (0, n * block - seg_L.shape[0]), mode="edge").reshape(n, block)
    return padded.min(axis=1), padded.max(axis=1)


def block_schedule(spec: MaskSpec, bq: int, bk: int, q_seg_T=None, kv_seg_S=None) -> np.ndarray:
    """Numpy [nq, nk] bool: which blocks the flash kernel computes (for one batch row)."""
    nq, nk = -(-spec.q_len // bq), -(-spec.kv_len // bk)
    out = np.zeros((nq, nk), dtype=bool)
    if spec.has_segments:
        q_min, q_max = _block_ranges(np.asarray(q_seg_T), bq)
        k_min, k_max = _block_ranges(np.asarray(kv_seg_S), bk)
    for i in range(nq):
        for j in range(nk):
            ranges = ((q_min[i], q_max[i]), (k_min[j], k_max[j])) if spec.has_segments else (None, None)
            out[i, j] = bool(block_visible(spec, i * bq, j * bk, bq, bk, *ranges))
    return out
