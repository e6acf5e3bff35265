"""The attention kernels compile for TPU (libtpu compile-only devices, on this CPU machine).

No monkeypatching: the kernels pick the Mosaic ("grid") shape because the active mesh is made of
TPU devices (`kernels.backend.target_backend`), although this process's default backend is CPU.
Each test asserts the compiled program contains the Mosaic kernels and that its temporaries stay
far below the chip's HBM (bounded on-chip buffers are checked by the compiler itself: a kernel
whose VMEM does not fit fails to compile, as the loop kernels did at 8K tokens).
"""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from kernels import backend
from qwenlong_jax.capacity import targets
from tests import kernel_cases

GIB = 2**30


@pytest.fixture(scope="module")
def chip_mesh():
    """One v5p chip (of the smallest v5p slice libtpu describes)."""
    devices = targets.topology_devices("v5p:2x2x1")
    return Mesh(np.array(devices[:1]), ("data",))


def test_backend_comes_from_the_mesh(chip_mesh):
    assert jax.default_backend() == "cpu" and backend.target_backend() == "cpu"
    with jax.set_mesh(chip_mesh):
        assert backend.target_backend() == "tpu"
    with backend.use_target("gpu"):
        assert backend.target_backend() == "gpu"


@pytest.mark.parametrize("T", [8192, 32768, 131072])
def test_flash_fwd_bwd_compiles_on_one_v5p_chip(chip_mesh, T):
    compiled = kernel_cases.flash_fwd_bwd(chip_mesh, T)
    assert targets.mosaic_kernel_count(compiled) == 3  # fwd, dq, dk/dv
    mem = compiled.memory_analysis()
    # Inputs+outputs are ~7 x T x 2.5 KiB; temporaries (padding, lse/delta rows, block runs)
    # must stay O(T) too: under 4 KiB per token (0.5 GiB at 128K).
    assert mem.temp_size_in_bytes < 4096 * T, mem


def test_decode_compiles_with_a_64k_prompt_cache(chip_mesh):
    compiled = kernel_cases.decode_64k(chip_mesh)
    assert targets.mosaic_kernel_count(compiled) == 2  # prompt cache, response caches
    mem = compiled.memory_analysis()
    assert mem.temp_size_in_bytes < 64 * 2**20, mem  # no copy of the 128 MiB cache


def test_ring_with_flash_pairs_compiles_on_a_v5p_slice():
    """Ring attention over 4 chips (sequence axis), flash pairs, 32K tokens, shared prefix."""
    compiled = kernel_cases.ring_fwd_bwd(Mesh(np.array(targets.topology_devices("v5p:2x2x1")), ("sequence",)))
    assert targets.mosaic_kernel_count(compiled) >= 3
    assert compiled.memory_analysis().temp_size_in_bytes < 1 * GIB
