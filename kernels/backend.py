"""The platform kernels are built for ("cpu" | "gpu" | "tpu"): the compile target, not the host.

    with use_target("tpu"): ...      # force a backend (tests, the compile check)
    target_backend()                 # else the active mesh's devices, else jax.default_backend()

A CPU process compiling for TPU devices (libtpu compile-only devices under `jax.set_mesh`)
builds the Mosaic kernels. From the backend follow the kernel shape ("grid" on TPU, "loop"
elsewhere), interpret mode (on CPU) and the Pallas compiler parameters.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Literal

import jax

# Kernel shapes: "loop" (each program loops over the other side's blocks; Triton and the CPU
# interpret default) and "grid" (a grid over blocks with VMEM scratch; Mosaic, TPU).
KERNELS = ("loop", "grid")

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("kernels_target_backend", default=None)


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


# Triton launch parameters (num_warps, num_stages) of the kernels traced in this context;
# `python -m qwenlong_jax.bench kernels --tune` sweeps them with the block sizes.
TRITON_DEFAULT = (4, 2)
_TRITON: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar("triton_params", default=TRITON_DEFAULT)


@contextlib.contextmanager
def use_triton(num_warps: int, num_stages: int):
    """Trace the GPU kernels inside this block with these Triton launch parameters."""
    token = _TRITON.set((num_warps, num_stages))
    try:
        yield
    finally:
        _TRITON.reset(token)


def compiler_params(num_grid_dims: int, interpret: bool):
    """Backend-specific Pallas compiler parameters (selects Triton rather than Mosaic GPU)."""
    backend = target_backend()
    if interpret or backend == "cpu":
        return None
    if backend == "gpu":
        from jax.experimental.pallas import triton as pltriton

        num_warps, num_stages = _TRITON.get()
        return pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages)
    if backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu

        # Every program writes its own output block (no cross-program accumulation).
        parallel: tuple[Literal["parallel"], ...] = tuple("parallel" for _ in range(num_grid_dims))
        return pltpu.CompilerParams(dimension_semantics=parallel)
    return None
