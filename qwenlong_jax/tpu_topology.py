"""Compile-only TPU devices (libtpu) for ahead-of-time compile checks on a machine without a TPU.

    devices = topology_devices("v5p:2x2x1")      # 4 TpuDevice objects that compile, never run
    mesh = jax.sharding.Mesh(np.array(devices).reshape(...), axis_names)
    with jax.set_mesh(mesh): compiled = jax.jit(f).trace(*abstract_args).lower().compile()

libtpu comes with `pip install "jax[tpu]==0.10.2"` (libtpu 0.0.42.1; tests/requirements.txt pins
it). Several processes may load libtpu at once here (tests, the compile CLI): nothing runs on a
chip, so libtpu's single-process lock is switched off (ALLOW_MULTIPLE_LIBTPU_LOAD).
"""
from __future__ import annotations

import importlib.util
import os

GIB = 2**30
INSTALL = ('libtpu is not installed: pip install "jax[tpu]==0.10.2" (brings libtpu 0.0.42.1, '
           'pinned in tests/requirements.txt)')
# HBM per chip as the TPU runtime reports it (memory_stats()["bytes_limit"]).
HBM_BYTES = {"v5p": int(95.74 * GIB), "v5e": int(15.75 * GIB), "v4": int(31.25 * GIB),
             "v6e": int(31.25 * GIB)}
MOSAIC_MARKER = "tpu_custom_call"  # how a Pallas (Mosaic) kernel appears in compiled TPU HLO


class TopologyError(ValueError):
    pass


def libtpu_available() -> bool:
    return importlib.util.find_spec("libtpu") is not None


def chip(topology: str) -> str:
    """"v5p:4x4x4" -> "v5p"."""
    return topology.split(":", 1)[0].strip().lower()


def hbm_bytes(topology: str) -> int:
    kind = chip(topology)
    if kind not in HBM_BYTES:
        raise TopologyError(f"unknown TPU chip {kind!r} in topology {topology!r}; known: "
                            f"{', '.join(sorted(HBM_BYTES))}")
    return HBM_BYTES[kind]


def topology_devices(topology: str) -> list:
    """The compile-only devices of `topology` (e.g. "v5p:4x4x4" = 64 chips)."""
    if not libtpu_available():
        raise TopologyError(INSTALL)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies
    try:
        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
    except Exception as e:  # libtpu's message names the rule broken (e.g. host bounds)
        raise TopologyError(f"topology {topology!r}: {str(e).splitlines()[0]}") from None
    return list(desc.devices)


def mosaic_kernel_count(compiled) -> int:
    """Number of Mosaic (Pallas TPU) kernel calls in a compiled program's HLO."""
    return compiled.as_text().count(MOSAIC_MARKER)
