"""NVIDIA GPU compile targets: the compile-only devices of jax's CUDA plugin, from spec files.

The CUDA plugin and the compiler tools XLA:GPU calls (ptxas, libdevice) are wheels:
`pip install "jax-cuda13-plugin==0.10.2" "jax-cuda13-pjrt==0.10.2" nvidia-cuda-nvcc nvidia-nvvm`
(pinned in tests/requirements.txt; no driver, no cuDNN/cuBLAS needed to compile). The plugin
describes GPUs from a text `stream_executor.GpuTargetConfigProto` (SM count, shared memory,
registers, memory size, compute capability): the project's own spec files, written from the
published facts with their sources, are in qwenlong_jax/assets/gpu_specs/. jax must run with
JAX_PLATFORMS=cpu (no GPU backend to initialise); the programs are then compiled by XLA:GPU,
Triton and ptxas for sm_90a exactly as on a GPU host, except that nothing is autotuned (no GPU
to time candidates on): XLA and Triton keep their default tilings, so the memory figures are
those of the untuned program.

Memory a run may allocate per GPU: the share of device memory jax's GPU client preallocates and
caps its allocator at: 75% by default, XLA_CLIENT_MEM_FRACTION (or the older
XLA_PYTHON_CLIENT_MEM_FRACTION) when set.
"""

from __future__ import annotations

import importlib.util
import os
import re

from qwenlong_jax.capacity.target_names import TopologyError, chip, shape_dims

SPEC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "gpu_specs")
CUDA_INSTALL = (
    'the CUDA compiler wheels are not installed: pip install "jax-cuda13-plugin==0.10.2" '
    '"jax-cuda13-pjrt==0.10.2" nvidia-cuda-nvcc nvidia-nvvm (pinned in '
    "tests/requirements.txt)"
)
# GPU chips: the spec file describing one GPU (qwenlong_jax/assets/gpu_specs/).
GPU_SPECS = {"h100": "h100_sxm.txtpb", "h200": "h200.txtpb"}
# jax's GPU client preallocates this share of device memory and caps its allocator there.
GPU_DEFAULT_MEM_FRACTION = 0.75


def cuda_available() -> bool:
    """jax's CUDA plugin and the ptxas/libdevice wheels XLA:GPU compiles with."""
    try:
        if importlib.util.find_spec("jax_plugins.xla_cuda13") is None:
            return False
    except ModuleNotFoundError:  # no jax_plugins namespace at all
        return False
    root = _nvidia_cuda_root()
    return root is not None and all(
        os.path.exists(os.path.join(root, p)) for p in (os.path.join("bin", "ptxas"), os.path.join("nvvm", "libdevice"))
    )


def _nvidia_cuda_root() -> str | None:
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations or []) if spec else []:
        if os.path.isdir(os.path.join(base, "cu13")):
            return os.path.join(base, "cu13")
    return None


def gpu_spec(chip_name: str) -> str:
    """The text GpuTargetConfigProto of one GPU chip ("h100", "h200")."""
    if chip_name not in GPU_SPECS:
        raise TopologyError(f"unknown GPU {chip_name!r}; known: {', '.join(sorted(GPU_SPECS))}")
    with open(os.path.join(SPEC_DIR, GPU_SPECS[chip_name])) as f:
        return f.read()


def gpu_device_memory(chip_name: str) -> int:
    m = re.search(r"^\s*device_memory_size:\s*(\d+)", gpu_spec(chip_name), re.M)
    if not m:
        raise TopologyError(f"{GPU_SPECS[chip_name]}: no device_memory_size")
    return int(m.group(1))


def gpu_mem_fraction() -> float:
    """The share of device memory jax's GPU client will use (its env variables, else 0.75)."""
    raw = os.environ.get("XLA_CLIENT_MEM_FRACTION") or os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION") or ""
    if not raw:
        return GPU_DEFAULT_MEM_FRACTION
    try:
        frac = float(raw)
    except ValueError:
        raise TopologyError(f"XLA_CLIENT_MEM_FRACTION={raw!r} is not a number") from None
    if not 0 < frac <= 1:
        raise TopologyError(f"XLA_CLIENT_MEM_FRACTION={raw!r} must be in (0, 1]")
    return frac


def gpu_devices(target: str) -> list:
    """Compile-only GPU devices of "h100:16x8" (16 processes x 8 GPUs; device ids numbered node
    by node, so a mesh built from them puts its innermost axes inside a node)."""
    chip_name = chip(target)
    if not cuda_available():
        raise TopologyError(CUDA_INSTALL)
    nodes, per_node = shape_dims(target, target.split(":", 1)[1] if ":" in target else "", 2)
    from jax.experimental import topologies

    try:
        desc = topologies.get_topology_desc(
            platform="cuda", target_config=gpu_spec(chip_name), topology=f"1x{nodes}x{per_node}"
        )
    except Exception as e:  # the plugin's message (e.g. a spec field it does not know)
        raise TopologyError(f"target {target!r}: {str(e).splitlines()[0]}") from None
    return list(desc.devices)


# ----------------------------------------------------------------------------- both
