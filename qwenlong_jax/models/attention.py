"""The model's attention seam: one function, implementation chosen by `cfg.attention_impl`.

  xla   plain jnp (kernels.reference_attention): materialises [B, N, T, S]; any backend.
  flash Pallas flash attention (kernels.flash_attention): O(T) memory, skips masked blocks.
  ring  ring attention over the mesh's `sequence` axis (kernels.ring_attention).

All three share the masking semantics documented in kernels/reference.py (causal, segment
ids with 0 = padding, and the shared-prefix GRPO layout).
"""
from __future__ import annotations

import jax

import kernels
from qwenlong_jax.models.config import ModelConfig


def self_attention(
    cfg: ModelConfig,
    q_BTNH: jax.Array,
    k_BTKH: jax.Array,
    v_BTKH: jax.Array,
    *,
    segment_ids_BT: jax.Array | None,
    shared_prefix_segment: int | None,
) -> jax.Array:
    kwargs = dict(
        causal=True,
        q_segment_ids_BT=segment_ids_BT,
        kv_segment_ids_BS=segment_ids_BT,
        shared_prefix_segment=shared_prefix_segment,
    )
    if cfg.attention_impl == "xla":
        return kernels.reference_attention(q_BTNH, k_BTKH, v_BTKH, **kwargs)
    if cfg.attention_impl == "flash":
        return kernels.flash_attention(q_BTNH, k_BTKH, v_BTKH, **kwargs)
    if cfg.attention_impl == "ring":
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty or "sequence" not in mesh.axis_names or mesh.shape["sequence"] < 2:
            raise ValueError(
                "model.attention_impl='ring' needs an active mesh with a 'sequence' axis > 1 "
                "(set mesh.sequence in the config)"
            )
        return kernels.ring_attention(q_BTNH, k_BTKH, v_BTKH, mesh=mesh, **kwargs)
    raise ValueError(f"model.attention_impl: unknown {cfg.attention_impl!r}")
