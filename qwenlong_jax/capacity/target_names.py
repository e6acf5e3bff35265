"""Target names: "v5p:4x4x4" (a libtpu topology) or "h100:16x8" (nodes x GPUs per node)."""

from __future__ import annotations


class TopologyError(ValueError):
    pass


def chip(topology: str) -> str:
    """ "v5p:4x4x4" -> "v5p"."""
    return topology.split(":", 1)[0].strip().lower()


def shape_dims(target: str, shape: str, n: int) -> tuple[int, ...]:
    """The n positive integers of `shape` ("4x4x4", "16x8") or a TopologyError naming `target`."""
    parts = shape.split("x")
    if len(parts) != n or not all(p.isdigit() and int(p) > 0 for p in parts):
        want = "AxBxC chips" if n == 3 else "NODESxGPUS (nodes x GPUs per node)"
        raise TopologyError(f"target {target!r}: the shape after ':' must be {want}")
    return tuple(int(p) for p in parts)
