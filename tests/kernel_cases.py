"""The attention kernels' compile cases, shared by the TPU (tests/test_compile_kernels.py) and GPU
(tests/test_compile_gpu.py) checks: each lowers a kernel on abstract inputs over `mesh`'s
compile-only devices and returns the compiled program; the tests assert on its kernels and bytes."""

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

import kernels

REPLICATED = P()

# Where the kernel tests run: on CPU both kernel shapes in Pallas interpret mode; on an
# accelerator (`JAX_PLATFORMS=cuda python -m pytest tests/test_flash_attention.py ...`) the shape
# its compiler builds, un-interpreted: "loop" through Triton on GPU, "grid" through Mosaic on TPU.
HOST = jax.default_backend()
KERNELS_HERE = {"cpu": ("loop", "grid"), "gpu": ("loop",), "tpu": ("grid",)}[HOST]
INTERPRET = HOST == "cpu"


def _abstract(mesh, shape, dtype=jnp.bfloat16, spec=REPLICATED):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))


def _fwd_bwd(attention):
    def fwd_bwd(q, k, v, seg):
        def attn(q, k, v):
            return attention(q, k, v, q_segment_ids_BT=seg, kv_segment_ids_BS=seg, shared_prefix_segment=1)

        out, vjp = jax.vjp(attn, q, k, v)
        return out, vjp(out)

    return fwd_bwd


def _compile(mesh, fn, *args):
    with jax.set_mesh(mesh):
        return jax.jit(fn).trace(*args).lower().compile()


def flash_fwd_bwd(mesh, T: int):
    """bf16 q [1, T, 8, 128], k/v [1, T, 2, 128], causal, shared-prefix segment ids; forward and
    backward on one device."""
    q, kv = _abstract(mesh, (1, T, 8, 128)), _abstract(mesh, (1, T, 2, 128))
    return _compile(mesh, _fwd_bwd(kernels.flash_attention), q, kv, kv, _abstract(mesh, (1, T), jnp.int32))


def decode_64k(mesh):
    """32B-like decode step: 16 samples, 40 query heads over 8 kv heads, 64K prompt cache."""
    B, G, N, K, H, S, R = 1, 16, 40, 8, 128, 65536, 4096
    a = lambda shape, dt=jnp.bfloat16: _abstract(mesh, shape, dt)  # noqa: E731
    args = (
        a((B, G, 1, N, H)),
        a((B, S, K, H)),
        a((B, S, K, H)),
        a((B,), jnp.int32),
        a((B, G, R, K, H)),
        a((B, G, R, K, H)),
        a((B, G), jnp.int32),
    )
    return _compile(mesh, kernels.decode_attention, *args)


def ring_fwd_bwd(mesh, T: int = 32768):
    """Ring attention over `mesh`'s "sequence" axis, flash pairs, shared prefix, T tokens."""
    spec = P(None, "sequence")
    q, kv = _abstract(mesh, (1, T, 8, 128), spec=spec), _abstract(mesh, (1, T, 2, 128), spec=spec)
    seg = _abstract(mesh, (1, T), jnp.int32, spec=spec)

    def ring(q, k, v, **kw):
        return kernels.ring_attention(q, k, v, mesh=mesh, **kw)

    return _compile(mesh, _fwd_bwd(ring), q, kv, kv, seg)
