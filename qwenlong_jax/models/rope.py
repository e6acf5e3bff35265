"""Rotary position embeddings (rotate-half layout, as HF Qwen2/Qwen3) with optional YaRN.

The inverse frequencies follow transformers' `_compute_default_rope_parameters` and
`_compute_yarn_parameters` step by step, in float32, so logits match transformers to 1e-4.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from qwenlong_jax.models.config import ModelConfig


def inv_freq_and_scale(cfg: ModelConfig) -> tuple[np.ndarray, float]:
    """Returns (inv_freq [H/2] float32, attention scaling applied to cos/sin)."""
    dim = cfg.head_dim
    base = cfg.rope_theta
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    pos_freqs = np.float32(base) ** exponents
    if cfg.rope_scaling is None:
        return (1.0 / pos_freqs).astype(np.float32), 1.0
    rs = cfg.rope_scaling
    factor = rs.factor
    attention_factor = rs.attention_factor
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0

    def correction_dim(num_rotations):
        return (dim * math.log(rs.original_max_position_embeddings / (num_rotations * 2 * math.pi))) / (
            2 * math.log(base)
        )

    low, high = correction_dim(rs.beta_fast), correction_dim(rs.beta_slow)
    if rs.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(np.float32)
    extrapolation_factor = np.float32(1) - ramp
    inv_extrap = np.float32(1.0) / pos_freqs
    inv_interp = np.float32(1.0) / (np.float32(factor) * pos_freqs)
    inv_freq = inv_interp * (1 - extrapolation_factor) + inv_extrap * extrapolation_factor
    return inv_freq.astype(np.float32), float(attention_factor)


def rope_cos_sin(cfg: ModelConfig, positions_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape [B, T, H] in float32 (scaled by YaRN's attention factor)."""
    inv_freq, scale = inv_freq_and_scale(cfg)
    freqs_BTh = positions_BT.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
    emb_BTH = jnp.concatenate([freqs_BTh, freqs_BTh], axis=-1)
    return jnp.cos(emb_BTH) * scale, jnp.sin(emb_BTH) * scale


def apply_rope(x_BTNH: jax.Array, cos_BTH: jax.Array, sin_BTH: jax.Array) -> jax.Array:
    """x * cos + rotate_half(x) * sin, computed in the input's dtype like transformers."""
    dtype = x_BTNH.dtype
    cos = cos_BTH[:, :, None, :].astype(dtype)
    sin = sin_BTH[:, :, None, :].astype(dtype)
    half = x_BTNH.shape[-1] // 2
    x1, x2 = x_BTNH[..., :half], x_BTNH[..., half:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return x_BTNH * cos + rotated * sin
