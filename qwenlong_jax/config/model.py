"""The ModelConfig a config's model section names: the size (or HF config.json) plus the run's
execution settings and RoPE scaling."""
from __future__ import annotations

from qwenlong_jax.config.load import ConfigError
from qwenlong_jax.config.schema import ModelSection
from qwenlong_jax.models.config import ModelConfig


def rope_overrides(section: ModelSection) -> dict:
    """ModelConfig fields set by model.rope_scaling (none when its factor is 0)."""
    rs = section.rope_scaling
    if not rs.factor:
        return {}
    from qwenlong_jax.models.config import RopeScaling

    return dict(rope_scaling=RopeScaling(factor=rs.factor, beta_fast=rs.beta_fast,
                                         beta_slow=rs.beta_slow,
                                         original_max_position_embeddings=rs.original_max_position_embeddings),
                max_position_embeddings=int(rs.original_max_position_embeddings * rs.factor))


def build_model_config(section: ModelSection, vocab_size: int | None = None) -> ModelConfig:
    """ModelConfig for the run: the named size (or HF config.json) plus execution settings."""
    from qwenlong_jax import models

    overrides = dict(
        param_dtype=section.param_dtype, dtype=section.dtype, attention_impl=section.attention_impl,
        remat=section.remat, scan_layers=section.scan_layers, logits_chunk=section.logits_chunk,
    )
    overrides.update(rope_overrides(section))
    if section.vocab_size:
        overrides["vocab_size"] = section.vocab_size
    elif vocab_size and section.size == "tiny":
        overrides["vocab_size"] = vocab_size
    try:
        if section.size == "hf":
            if not section.hf_path:
                raise ConfigError("model.hf_path: required when model.size='hf'")
            return models.read_hf_config(section.hf_path, **overrides)
        return models.get_model_config(section.size, **overrides)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None
