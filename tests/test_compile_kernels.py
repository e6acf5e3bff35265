"""The attention kernels compile for TPU (libtpu compile-only devices, on this CPU machine).

No monkeypatching: the kernels pick the Mosaic ("grid") shape because the active mesh is made of
TPU devices (`kernels.backend.target_backend`), although this process's default backend is CPU.
Each test asserts the compiled program contains the Mosaic kernels and that its temporaries stay
far below the chip's HBM (bounded on-chip buffers are checked by the compiler itself: a kernel
whose VMEM does not fit fails to compile, as the loop kernels did at 8K tokens).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import kernels
from kernels import backend
from qwenlong_jax.capacity import targets

GIB = 2**30


@pytest.fixture(scope="module")
def chip_mesh():
    """One v5p chip (of the smallest v5p slice libtpu describes)."""
    devices = targets.topology_devices("v5p:2x2x1")
    return Mesh(np.array(devices[:1]), ("data",))


def _abstract(mesh, shape, dtype=jnp.bfloat16):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P()))


def test_backend_comes_from_the_mesh(chip_mesh):
    assert jax.default_backend() == "cpu" and backend.target_backend() == "cpu"
    with jax.set_mesh(chip_mesh):
        assert backend.target_backend() == "tpu"
    with backend.use_target("gpu"):
        assert backend.target_backend() == "gpu"


@pytest.mark.parametrize("T", [8192, 32768, 131072])
def test_flash_fwd_bwd_compiles_on_one_v5p_chip(chip_mesh, T):
    """bf16 q [1, T, 8, 128], k/v [1, T, 2, 128], causal, shared-prefix segment ids."""
    q = _abstract(chip_mesh, (1, T, 8, 128))
    kv = _abstract(chip_mesh, (1, T, 2, 128))
    seg = _abstract(chip_mesh, (1, T), jnp.int32)

    def fwd_bwd(q, k, v, seg):
        def attn(q, k, v):
            return kernels.flash_attention(
                q, k, v, q_segment_ids_BT=seg, kv_segment_ids_BS=seg, shared_prefix_segment=1
            )

        out, vjp = jax.vjp(attn, q, k, v)
        return out, vjp(out)

    with jax.set_mesh(chip_mesh):
        compiled = jax.jit(fwd_bwd).trace(q, kv, kv, seg).lower().compile()
    assert targets.mosaic_kernel_count(compiled) == 3  # fwd, dq, dk/dv
    mem = compiled.memory_analysis()
    # Inputs+outputs are ~7 x T x 2.5 KiB; temporaries (padding, lse/delta rows, block runs)
    # must stay O(T) too: under 4 KiB per token (0.5 GiB at 128K).
    assert mem.temp_size_in_bytes < 4096 * T, mem


def test_decode_compiles_with_a_64k_prompt_cache(chip_mesh):
    """32B-like decode step: 16 samples, 40 query heads over 8 kv heads, 64K prompt cache."""
    B, G, N, K, H, S, R = 1, 16, 40, 8, 128, 65536, 4096

    def a(shape, dt=jnp.bfloat16):
        return _abstract(chip_mesh, shape, dt)

    args = (
        a((B, G, 1, N, H)),
        a((B, S, K, H)),
        a((B, S, K, H)),
        a((B,), jnp.int32),
        a((B, G, R, K, H)),
        a((B, G, R, K, H)),
        a((B, G), jnp.int32),
    )
    with jax.set_mesh(chip_mesh):
        compiled = jax.jit(kernels.decode_attention).trace(*args).lower().compile()
    assert targets.mosaic_kernel_count(compiled) == 2  # prompt cache, response caches
    mem = compiled.memory_analysis()
    assert mem.temp_size_in_bytes < 64 * 2**20, mem  # no copy of the 128 MiB cache


def test_ring_with_flash_pairs_compiles_on_a_v5p_slice():
    """Ring attention over 4 chips (sequence axis), flash pairs, 32K tokens, shared prefix."""
    devices = targets.topology_devices("v5p:2x2x1")
    mesh = Mesh(np.array(devices), ("sequence",))
    T = 32768

    def spec(*s):
        return NamedSharding(mesh, P(*s))

    q = jax.ShapeDtypeStruct((1, T, 8, 128), jnp.bfloat16, sharding=spec(None, "sequence"))
    kv = jax.ShapeDtypeStruct((1, T, 2, 128), jnp.bfloat16, sharding=spec(None, "sequence"))
    seg = jax.ShapeDtypeStruct((1, T), jnp.int32, sharding=spec(None, "sequence"))

    def fwd_bwd(q, k, v, seg):
        def attn(q, k, v):
            return kernels.ring_attention(
                q, k, v, mesh=mesh, q_segment_ids_BT=seg, kv_segment_ids_BS=seg, shared_prefix_segment=1
            )

        out, vjp = jax.vjp(attn, q, k, v)
        return out, vjp(out)

    with jax.set_mesh(mesh):
        compiled = jax.jit(fwd_bwd).trace(q, kv, kv, seg).lower().compile()
    assert targets.mosaic_kernel_count(compiled) >= 3
    assert compiled.memory_analysis().temp_size_in_bytes < 1 * GIB
