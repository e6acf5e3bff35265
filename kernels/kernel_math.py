"""In-kernel math shared by the Pallas kernels (flash, decode, their TPU grid variants).

Matmuls accumulate in float32. The `mosaic_*` variants pass an explicit per-dtype precision:
under a global `jax_default_matmul_precision="highest"` (our tests set it) Mosaic would be asked
for an fp32 contraction of bf16 operands, which it rejects ("Bad lhs type").
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def mosaic_precision(a):
    return lax.Precision.HIGHEST if a.dtype == jnp.float32 else lax.Precision.DEFAULT


def dot(a, b, precision=None):  # a @ b
    return lax.dot_general(a, b, (((1,), (0,)), ((), ())), precision=precision, preferred_element_type=jnp.float32)


def dot_nt(a, b, precision=None):  # a @ b.T
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=precision, preferred_element_type=jnp.float32)


def dot_tn(a, b, precision=None):  # a.T @ b
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=precision, preferred_element_type=jnp.float32)


def mosaic_dot(a, b):
    return dot(a, b, mosaic_precision(a))


def mosaic_dot_nt(a, b):
    return dot_nt(a, b, mosaic_precision(a))


def mosaic_dot_tn(a, b):
    return dot_tn(a, b, mosaic_precision(a))


def iota(n: int, start):  # [n] positions from start
    return start + lax.broadcasted_iota(jnp.int32, (n,), 0)
