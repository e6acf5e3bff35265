"""HF config.json <-> ModelConfig, accepting both transformers 4.x and 5.x spellings.

4.x: `rope_theta` + `rope_scaling` {type|rope_type, factor, original_max_position_embeddings},
     `torch_dtype`.
5.x: `rope_parameters` {rope_type, rope_theta, factor, ...}, `dtype`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from qwenlong_jax.models.config import MODEL_TYPES, ModelConfig, RopeScaling


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: the message names the file and the key."""


def _rope_from_hf(hf: dict, where: str) -> tuple[float, RopeScaling | None]:
    params = hf.get("rope_parameters") or {}
    legacy = hf.get("rope_scaling") or {}
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    scaling = params if params.get("rope_type", "default") != "default" else legacy
    rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if rope_type == "default":
        return float(theta), None
    if rope_type != "yarn":
        raise CheckpointError(f"{where}: rope type {rope_type!r} is not supported (default or yarn)")
    original = scaling.get("original_max_position_embeddings") or hf.get("max_position_embeddings")
    if original is None:
        raise CheckpointError(f"{where}: yarn rope_scaling needs original_max_position_embeddings")
    return float(theta), RopeScaling(
        factor=float(scaling["factor"]),
        original_max_position_embeddings=int(original),
        beta_fast=float(scaling.get("beta_fast") or 32.0),
        beta_slow=float(scaling.get("beta_slow") or 1.0),
        attention_factor=scaling.get("attention_factor"),
        truncate=bool(scaling.get("truncate", True)),
    )


def model_config_from_hf(hf: dict, where: str = "config.json", **overrides) -> ModelConfig:
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise CheckpointError(
            f"{where}: model_type {model_type!r} is not supported (supported: {', '.join(MODEL_TYPES)})"
        )
    try:
        theta, scaling = _rope_from_hf(hf, where)
        D, N = hf["hidden_size"], hf["num_attention_heads"]
        cfg = dict(
            model_type=model_type,
            vocab_size=hf["vocab_size"],
            hidden_size=D,
            num_layers=hf["num_hidden_layers"],
            num_heads=N,
            num_kv_heads=hf.get("num_key_value_heads") or N,
            head_dim=hf.get("head_dim") or D // N,
            intermediate_size=hf["intermediate_size"],
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=hf.get("max_position_embeddings", 32768),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
            qk_norm=model_type == "qwen3",
        )
    except KeyError as e:
        raise CheckpointError(f"{where}: missing key {e.args[0]!r}") from None
    cfg.update(overrides)
    return ModelConfig(**cfg)


def model_config_to_hf(cfg: ModelConfig, dtype: str) -> dict:
    """A config.json in the 4.x spelling, which transformers 4.x and 5.x both read."""
    arch = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[cfg.model_type]
    hf: dict[str, Any] = {
        "architectures": [arch],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "torch_dtype": dtype,
    }
    if cfg.model_type == "qwen3":
        hf["attention_bias"] = cfg.qkv_bias
    if cfg.rope_scaling is not None:
        rs = cfg.rope_scaling
        hf["rope_scaling"] = {
            "rope_type": "yarn",
            "type": "yarn",
            "factor": rs.factor,
            "original_max_position_embeddings": rs.original_max_position_embeddings,
            "beta_fast": rs.beta_fast,
            "beta_slow": rs.beta_slow,
            "truncate": rs.truncate,
        }
        if rs.attention_factor is not None:
            hf["rope_scaling"]["attention_factor"] = rs.attention_factor
    return hf


def read_hf_config(path: str, **overrides) -> ModelConfig:
    where = os.path.join(path, "config.json")
    if not os.path.exists(where):
        raise CheckpointError(f"{where}: not found (an HF checkpoint directory needs config.json)")
    try:
        with open(where) as f:
            hf = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}:{e.lineno}: invalid JSON ({e.msg})") from None
    return model_config_from_hf(hf, where, **overrides)
