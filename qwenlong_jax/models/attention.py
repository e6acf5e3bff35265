"""The model's attention seam: one function, implementation chosen by `cfg.attention_impl`.

  xla   plain jnp (kernels.reference_attention): materialises [B, N, T, S]; any backend.
  flash Pallas flash attention (kernels.flash_attention): O(T) memory, skips masked blocks.
        On a CPU compile target it is the Pallas interpreter (for testing the kernels: slow).
  blockwise  the same blocks in plain lax (kernels.blockwise_attention): O(T) memory, skips
        masked blocks, compiled by XLA as ordinary matmuls; the CPU path (configs/default.py).
  ring  ring attention over the mesh's `sequence` axis (kernels.ring_attention).

All four share the masking semantics documented in kernels/reference.py (causal, segment
ids with 0 = padding, and the shared-prefix GRPO layout); tests/test_model_attention_impls.py
checks that the model's logits and gradients agree across them.

Flash and ring are told which mesh axes the batch and heads are sharded over (from sharding.RULES, the
same table the activations are constrained with), so on a (data, fsdp, tensor, sequence) mesh
each device keeps its own batch rows / heads instead of shard_map gathering them. A dimension
its axes do not divide stays unsharded there (as `sharding.constrain` leaves it).
"""

from __future__ import annotations

from typing import Any

import jax

import kernels
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.parallel import sharding


def _mesh_axis_for(logical: str, dims: tuple[int, ...], mesh):
    """Mesh axes of `logical` under `mesh` if they divide every size in `dims`, else None."""
    entry = sharding.logical_to_spec((logical,), mesh.axis_names)[0]
    size = sharding.mesh_axis_size(mesh, entry)
    if entry is None or size == 1 or any(d % size for d in dims):
        return None
    return entry


def ring_axes(mesh, batch: int, num_heads: int, num_kv_heads: int) -> dict:
    """`batch_axis` / `head_axis` keywords for kernels.ring_attention under `mesh`."""
    return dict(
        batch_axis=_mesh_axis_for("batch", (batch,), mesh),
        head_axis=_mesh_axis_for("heads", (num_heads, num_kv_heads), mesh),
    )


def self_attention(
    cfg: ModelConfig,
    q_BTNH: jax.Array,
    k_BTKH: jax.Array,
    v_BTKH: jax.Array,
    *,
    segment_ids_BT: jax.Array | None,
    shared_prefix_segment: int | None,
) -> jax.Array:
    kwargs: dict[str, Any] = dict(
        causal=True,
        q_segment_ids_BT=segment_ids_BT,
        kv_segment_ids_BS=segment_ids_BT,
        shared_prefix_segment=shared_prefix_segment,
    )
    if cfg.attention_impl == "xla":
        return kernels.reference_attention(q_BTNH, k_BTKH, v_BTKH, **kwargs)
    if cfg.attention_impl in ("flash", "blockwise"):
        mesh = jax.sharding.get_abstract_mesh()
        if not mesh.empty and mesh.size > 1:  # per shard: XLA cannot partition a Mosaic kernel
            B, _, N, _ = q_BTNH.shape
            kwargs.update(mesh=mesh, **ring_axes(mesh, B, N, k_BTKH.shape[2]))
        attn = kernels.flash_attention if cfg.attention_impl == "flash" else kernels.blockwise_attention
        return attn(q_BTNH, k_BTKH, v_BTKH, **kwargs)
    if cfg.attention_impl == "ring":
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty or "sequence" not in mesh.axis_names or mesh.shape["sequence"] < 2:
            raise ValueError(
                "model.attention_impl='ring' needs an active mesh with a 'sequence' axis > 1 "
                "(set mesh.sequence in the config)"
            )
        B, _, N, _ = q_BTNH.shape
        axes = ring_axes(mesh, B, N, k_BTKH.shape[2])
        return kernels.ring_attention(q_BTNH, k_BTKH, v_BTKH, mesh=mesh, **axes, **kwargs)
    raise ValueError(f"model.attention_impl: unknown {cfg.attention_impl!r}")
