"""Parameter pytree of the decoder: shapes, logical axis names, initialisation.

Dimension legend (used in every name in models/):
  B batch   T query length   S key length   D hidden_size   F intermediate_size
  L layers  N query heads    K kv heads     H head_dim       V vocab

Layout: layer parameters are stacked on a leading L axis (scan over layers keeps compile
time flat for 64-layer models; unstacked loops index the same arrays).

    embed        [V, D]          ("vocab", "embed")
    layers/attn_norm [L, D]      ("layers", "norm")
    layers/q     [L, D, N, H]    ("layers", "embed", "heads", "head_dim")
    layers/k, v  [L, D, K, H]    ("layers", "embed", "kv_heads", "head_dim")
    layers/q_bias [L, N, H], k_bias/v_bias [L, K, H]   (Qwen2)
    layers/q_norm, k_norm [L, H] (Qwen3)
    layers/o     [L, N, H, D]    ("layers", "heads", "head_dim", "embed")
    layers/mlp_norm [L, D]
    layers/gate, up [L, D, F]    ("layers", "embed", "mlp")
    layers/down  [L, F, D]       ("layers", "mlp", "embed")
    final_norm   [D]
    lm_head      [D, V]          ("embed", "vocab")   (absent when embeddings are tied)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qwenlong_jax.models.config import ModelConfig

Spec = tuple[tuple[int, ...], tuple[str | None, ...]]


def param_specs(cfg: ModelConfig) -> dict:
    """Pytree of (shape, logical axes) for every parameter."""
    D, F, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, cfg.vocab_size
    N, K, H = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    layers = {
        "attn_norm": ((L, D), ("layers", "norm")),
        "q": ((L, D, N, H), ("layers", "embed", "heads", "head_dim")),
        "k": ((L, D, K, H), ("layers", "embed", "kv_heads", "head_dim")),
        "v": ((L, D, K, H), ("layers", "embed", "kv_heads", "head_dim")),
        "o": ((L, N, H, D), ("layers", "heads", "head_dim", "embed")),
        "mlp_norm": ((L, D), ("layers", "norm")),
        "gate": ((L, D, F), ("layers", "embed", "mlp")),
        "up": ((L, D, F), ("layers", "embed", "mlp")),
        "down": ((L, F, D), ("layers", "mlp", "embed")),
    }
    if cfg.qkv_bias:
        layers["q_bias"] = ((L, N, H), ("layers", "heads", "head_dim"))
        layers["k_bias"] = ((L, K, H), ("layers", "kv_heads", "head_dim"))
        layers["v_bias"] = ((L, K, H), ("layers", "kv_heads", "head_dim"))
    if cfg.qk_norm:
        layers["q_norm"] = ((L, H), ("layers", "head_dim"))
        layers["k_norm"] = ((L, H), ("layers", "head_dim"))
    specs = {
        "embed": ((V, D), ("vocab", "embed")),
        "layers": layers,
        "final_norm": ((D,), ("norm",)),
    }
    if not cfg.tie_word_embeddings:
        specs["lm_head"] = ((D, V), ("embed", "vocab"))
    return specs


def is_spec(x) -> bool:
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple)


def logical_axes(cfg: ModelConfig) -> dict:
    return jax.tree.map(lambda s: s[1], param_specs(cfg), is_leaf=is_spec)


def param_shapes(cfg: ModelConfig) -> dict:
    """jax.ShapeDtypeStruct pytree; nothing is allocated."""
    dtype = jnp.dtype(cfg.param_dtype)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s[0], dtype), param_specs(cfg), is_leaf=is_spec)


def init_params(cfg: ModelConfig, rng: jax.Array, init_std: float = 0.02) -> dict:
    """Random init: normal(init_std) for matrices, ones for norms, zeros for biases.

    Pure and jittable, so `jax.jit(init_params, out_shardings=...)` creates params directly
    in their shardings.
    """
    specs = param_specs(cfg)
    dtype = jnp.dtype(cfg.param_dtype)
    leaves, treedef = jax.tree.flatten(specs, is_leaf=is_spec)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(specs, is_leaf=is_spec)[0]]
    keys = jax.random.split(rng, len(leaves))
    out = []
    for key, path, (shape, _) in zip(keys, paths, leaves):
        if "norm" in path:
            out.append(jnp.ones(shape, dtype))
        elif "bias" in path:
            out.append(jnp.zeros(shape, dtype))
        else:
            out.append((init_std * jax.random.normal(key, shape, jnp.float32)).astype(dtype))
    return jax.tree.unflatten(treedef, out)


def count_params(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
