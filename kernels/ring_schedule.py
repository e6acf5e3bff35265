"""The ring's static description (`RingStatic`), which chunks each device holds, and which
(q chunk, kv chunk) pairs it computes.

Causal: the sequence is cut into 2P chunks and device d holds chunks d and 2P-1-d ("zigzag"), so
every device computes exactly 2P+1 of the pairs that are not fully masked (3 at the step where it
holds its own K/V, 2 at every other step), instead of 1..2P-1 with contiguous chunks
(`ring_schedule` counts them from the same `pair_mode` the kernel uses). Inputs and outputs keep
the natural order; inside `shard_map` four ppermutes (an all-to-all of the local data,
`to_zigzag`) move chunks into zigzag order and back. Non-causal attention keeps contiguous chunks
(all pairs are full, balance is automatic).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh

from kernels.ring_pair import PairStatic

SKIP, FULL, DIAGONAL = 0, 1, 2  # pair modes


@dataclasses.dataclass(frozen=True)
class RingStatic:
    mesh: Mesh
    axis_name: str
    batch_axis: str | tuple[str, ...] | None
    head_axis: str | None
    causal: bool
    has_segments: bool
    shared_prefix_segment: int | None
    pair: PairStatic

    @property
    def num_devices(self) -> int:
        return self.mesh.shape[self.axis_name]


def chunk_ids(device, num_devices: int, causal: bool):
    """Global chunk ids (of 2P chunks) held by `device`: zigzag when causal, else contiguous."""
    if causal:
        return device, 2 * num_devices - 1 - device
    return 2 * device, 2 * device + 1


def pair_mode(q_chunk, kv_chunk, causal: bool):
    """SKIP / FULL / DIAGONAL for a (q chunk, kv chunk) pair; works on ints and traced ints."""
    if not causal:
        return FULL if isinstance(q_chunk, int) else jnp.int32(FULL)
    if isinstance(q_chunk, int) and isinstance(kv_chunk, int):
        return SKIP if kv_chunk > q_chunk else (DIAGONAL if kv_chunk == q_chunk else FULL)
    return jnp.where(kv_chunk > q_chunk, SKIP, jnp.where(kv_chunk == q_chunk, DIAGONAL, FULL))


def ring_schedule(num_devices: int, causal: bool, zigzag: bool = True) -> np.ndarray:
    """[device, step] number of computed (not fully masked) chunk pairs, without segments."""
    ids = (lambda d: chunk_ids(d, num_devices, causal)) if zigzag else (lambda d: (2 * d, 2 * d + 1))
    out = np.zeros((num_devices, num_devices), dtype=int)
    for d in range(num_devices):
        for step in range(num_devices):
            src = (d - step) % num_devices
            out[d, step] = sum(pair_mode(qc, kc, causal) != SKIP for qc in ids(d) for kc in ids(src))
    return out


def halves(x):
    c = x.shape[1] // 2
    return x[:, :c], x[:, c:]


def zigzag_moves(num: int):
    """For each (natural half h, zigzag slot s): the ppermute pairs moving those chunks.

    Natural layout: device d holds chunks 2d, 2d+1. Zigzag: device d holds chunks d, 2P-1-d.
    Within one (h, s) group every device sends and receives at most one chunk, so each group is
    one ppermute; the four together are an all-to-all of the local data (no gather).
    """
    moves: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for c in range(2 * num):
        dest, slot = (c, 0) if c < num else (2 * num - 1 - c, 1)
        moves.setdefault((c % 2, slot), []).append((c // 2, dest))
    return moves


def to_zigzag(static: RingStatic, x, inverse: bool = False):
    if not static.causal:
        return x
    parts = halves(x)
    out = [jnp.zeros_like(parts[0]), jnp.zeros_like(parts[1])]
    for (h, s), pairs in zigzag_moves(static.num_devices).items():
        src, dst = (s, h) if inverse else (h, s)
        perm = [(b, a) for a, b in pairs] if inverse else pairs
        out[dst] = out[dst] + lax.ppermute(parts[src], static.axis_name, perm)
    return jnp.concatenate(out, axis=1)
