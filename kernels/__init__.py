"""Attention kernels (Pallas) and their plain-jnp references.

    flash_attention     kernels/flash.py             training/prefill, Pallas fwd+bwd
    blockwise_attention kernels/blockwise.py         the same in plain lax: CPU and fallback
    decode_attention    kernels/decode.py            sampler: G samples share one prompt KV cache
    ring_attention      kernels/ring.py              sequence-parallel under shard_map
    reference_attention kernels/reference.py         plain jnp; the ground truth and `xla` path

Exports are lazy (PEP 562 `__getattr__`) because PyPI has an unrelated package also named
`kernels` (Hugging Face's kernel hub) that transformers probes for: `find_spec("kernels")` finds
us when the repo root is on sys.path, there is no distribution metadata, so transformers falls
back to importing the module and reading `__version__`. Importing this file therefore must be
cheap and side-effect free (no jax import), and it deliberately defines no `__version__`, so
transformers reads "N/A" and `is_kernels_available()` is False (tests/test_kernels_package.py).
Submodules are named flash/decode/ring, not after the functions, so that a submodule import
never shadows an exported function of the same name.
"""

import importlib

_EXPORTS = {
    "attention_mask": "kernels.reference",
    "reference_attention": "kernels.reference",
    "flash_attention": "kernels.flash",
    "blockwise_attention": "kernels.blockwise",
    "decode_attention": "kernels.decode",
    "reference_decode_attention": "kernels.decode",
    "ring_attention": "kernels.ring",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kernels' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return __all__
