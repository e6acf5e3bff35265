"""Compile targets: compile-only devices of a TPU slice (libtpu) or of NVIDIA GPU nodes (jax's CUDA
plugin), for ahead-of-time compile checks on a machine with neither.

    t = parse("v5p:4x4x4")       # 64 TPU v5p chips (libtpu's topology name)
    t = parse("h100:16x8")       # 16 nodes x 8 H100 GPUs
    mesh = jax.sharding.Mesh(np.array(t.devices()).reshape(...), axis_names)
    with jax.set_mesh(mesh): compiled = jax.jit(f).trace(*abstract_args).lower().compile()
    kernel_count(compiled, t.kind)     # Pallas kernels in the program: Mosaic (TPU) or Triton (GPU)

TPU: libtpu comes with `pip install "jax[tpu]==0.10.2"` (libtpu 0.0.42.1; tests/requirements.txt
pins it). Several processes may load libtpu at once here (tests, the compile CLI): nothing runs on a
chip, so libtpu's single-process lock is switched off (ALLOW_MULTIPLE_LIBTPU_LOAD).

GPU: jax's CUDA plugin's compile-only devices, described by spec files (capacity/gpu_targets.py).

Memory per device (`Target.memory_bytes`) is what a run may allocate: a TPU chip's HBM as the
runtime reports it; on a GPU, the share of device memory jax's GPU client preallocates and caps
its allocator at: 75% by default, XLA_CLIENT_MEM_FRACTION (or the older
XLA_PYTHON_CLIENT_MEM_FRACTION) when set. A run that sets a larger fraction gets a larger budget
here too when the variable is set for the compile check.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os

from qwenlong_jax.capacity.gpu_targets import (
    CUDA_INSTALL,
    GPU_SPECS,
    cuda_available,
    gpu_device_memory,
    gpu_devices,
    gpu_mem_fraction,
)
from qwenlong_jax.capacity.target_names import TopologyError, chip, shape_dims

GIB = 2**30

TPU_INSTALL = (
    'libtpu is not installed: pip install "jax[tpu]==0.10.2" (brings libtpu 0.0.42.1, pinned in tests/requirements.txt)'
)
INSTALL = TPU_INSTALL  # the compile check's message when libtpu is missing
# HBM per TPU chip as the TPU runtime reports it (memory_stats()["bytes_limit"]).
HBM_BYTES = {"v5p": int(95.74 * GIB), "v5e": int(15.75 * GIB), "v4": int(31.25 * GIB), "v6e": int(31.25 * GIB)}
# How a Pallas kernel appears in the compiled program's HLO, per kind of target.
MOSAIC_MARKER = "tpu_custom_call"
TRITON_MARKER = 'custom_call_target="__gpu$xla.gpu.triton"'
KERNEL_MARKERS = {"tpu": MOSAIC_MARKER, "gpu": TRITON_MARKER}
KERNEL_NAMES = {"tpu": "Mosaic", "gpu": "Triton"}


@dataclasses.dataclass(frozen=True)
class Target:
    """One compile target: `name` as given ("v5p:4x4x4", "h100:16x8")."""

    name: str
    kind: str  # "tpu" | "gpu"
    chip: str  # "v5p", "h100", ...
    chips: int
    memory_bytes: int  # what a run may allocate per device (see the module docstring)
    device_memory_bytes: int  # the device's total memory

    @property
    def kernel_name(self) -> str:
        return KERNEL_NAMES[self.kind]

    def devices(self) -> list:
        return topology_devices(self.name) if self.kind == "tpu" else gpu_devices(self.name)

    def available(self) -> bool:
        return libtpu_available() if self.kind == "tpu" else cuda_available()

    @property
    def install(self) -> str:
        return TPU_INSTALL if self.kind == "tpu" else CUDA_INSTALL


def parse(target: str) -> Target:
    """ "v5p:4x4x4" (a libtpu topology) or "h100:16x8" (nodes x GPUs per node) -> Target."""
    chip_name = chip(target)
    shape = target.split(":", 1)[1].strip() if ":" in target else ""
    if chip_name in HBM_BYTES:
        dims = shape_dims(target, shape, 3)
        hbm = hbm_bytes(target)
        return Target(target, "tpu", chip_name, math.prod(dims), hbm, hbm)
    if chip_name in GPU_SPECS:
        nodes, per_node = shape_dims(target, shape, 2)
        total = gpu_device_memory(chip_name)
        return Target(
            f"{chip_name}:{nodes}x{per_node}",
            "gpu",
            chip_name,
            nodes * per_node,
            int(total * gpu_mem_fraction()),
            total,
        )
    raise TopologyError(
        f"unknown chip {chip_name!r} in target {target!r}; known: TPU "
        f"{', '.join(sorted(HBM_BYTES))} (e.g. v5p:4x4x4), GPU "
        f"{', '.join(sorted(GPU_SPECS))} (nodes x GPUs per node, e.g. h100:16x8)"
    )


# ----------------------------------------------------------------------------- TPU


def libtpu_available() -> bool:
    return importlib.util.find_spec("libtpu") is not None


def hbm_bytes(topology: str) -> int:
    kind = chip(topology)
    if kind not in HBM_BYTES:
        raise TopologyError(
            f"unknown TPU chip {kind!r} in topology {topology!r}; known: {', '.join(sorted(HBM_BYTES))}"
        )
    return HBM_BYTES[kind]


def topology_devices(topology: str) -> list:
    """The compile-only devices of `topology` (e.g. "v5p:4x4x4" = 64 chips)."""
    if not libtpu_available():
        raise TopologyError(TPU_INSTALL)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    try:
        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
    except Exception as e:  # libtpu's message names the rule broken (e.g. host bounds)
        raise TopologyError(f"topology {topology!r}: {str(e).splitlines()[0]}") from None
    return list(desc.devices)


def mosaic_kernel_count(compiled) -> int:
    """Number of Mosaic (Pallas TPU) kernel calls in a compiled program's HLO."""
    return kernel_count(compiled, "tpu")


def kernel_count(compiled, kind: str) -> int:
    """Number of Pallas kernel calls (Mosaic on TPU, Triton on GPU) in a compiled program."""
    return compiled.as_text().count(KERNEL_MARKERS[kind])


def default_target(chips: int) -> str:
    """The smallest v5p slice name for `chips` chips (the TPU config's default)."""
    if chips not in V5P_SLICES:
        raise TopologyError(
            f"a mesh of {chips} chips is no v5p slice "
            f"({', '.join(map(str, V5P_SLICES))} chips); pass --target and "
            "--config.mesh.* to match"
        )
    return V5P_SLICES[chips]


V5P_SLICES = {
    4: "v5p:2x2x1",
    8: "v5p:2x2x2",
    16: "v5p:2x2x4",
    32: "v5p:2x4x4",
    64: "v5p:4x4x4",
    128: "v5p:4x4x8",
    256: "v5p:4x8x8",
    512: "v5p:8x8x8",
}
