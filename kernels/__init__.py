"""Attention kernels (Pallas) and their plain-jnp references.

    flash_attention     kernels/flash_attention.py   training/prefill, Pallas fwd+bwd
    decode_attention    kernels/decode_attention.py  sampler: G samples share one prompt KV cache
    ring_attention      kernels/ring_attention.py    sequence-parallel under shard_map
    reference_attention kernels/reference.py         plain jnp; the ground truth and `xla` path

Note: PyPI has an unrelated package also named `kernels` (Hugging Face's kernel hub) that
transformers probes for with `importlib.util.find_spec("kernels")` + `importlib.metadata`
version lookup. With the repo root on sys.path our package is found by find_spec, but it has no
distribution metadata, so transformers' `is_kernels_available()` stays False and transformers
never imports anything from us (tests/test_kernels_package.py checks this).
"""
from kernels.decode_attention import decode_attention, reference_decode_attention  # noqa: F401
from kernels.flash_attention import flash_attention  # noqa: F401
from kernels.reference import attention_mask, reference_attention  # noqa: F401
from kernels.ring_attention import ring_attention  # noqa: F401
