"""Attention kernels (Pallas) and their plain-jnp references.

Note: PyPI has an unrelated package also named `kernels` that transformers probes for; our
top-level package must not confuse it (see tests/test_kernels_package.py).
"""
from kernels.reference import attention_mask, reference_attention  # noqa: F401
