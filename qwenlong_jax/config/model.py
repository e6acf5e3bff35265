"""The model a config trains, as functions of the config alone.

    tokenizer_path(cfg)          data.tokenizer, else the model's own, else the embedded one
    model_config(cfg, vocab)     the ModelConfig trained: model.init_from's config.json when set,
                                 else the named size (or model.hf_path's config.json)
    build_model_config(section)  the named size with the run's execution settings
    exec_overrides(section)      those settings (and RoPE scaling), laid over a checkpoint's config

run/spec.py calls model_config once per run; the trainer, the planner and the compile check read
the result from the RunSpec.
"""

from __future__ import annotations

import dataclasses

from qwenlong_jax.config.load import ConfigError
from qwenlong_jax.config.schema import Config, ModelSection
from qwenlong_jax.models.config import ModelConfig


def tokenizer_path(cfg: Config) -> str:
    """data.tokenizer when set; else a tokenizer inside the model (init_from, then hf_path;
    data.tokenizer.find_tokenizer's rule); else the embedded one."""
    from qwenlong_jax.data.tokenizer import DEFAULT_TOKENIZER, find_tokenizer

    return find_tokenizer(cfg.data.tokenizer, cfg.model.init_from, cfg.model.hf_path) or DEFAULT_TOKENIZER


def needs_tokenizer_vocab(cfg: Config) -> bool:
    """Whether the model's vocabulary is the tokenizer's (the tiny size without a vocab_size or
    a checkpoint): model_config then needs the tokenizer's vocab_size."""
    m = cfg.model
    return m.size == "tiny" and not m.vocab_size and not m.init_from


def rope_overrides(section: ModelSection) -> dict:
    """ModelConfig fields set by model.rope_scaling (none when its factor is 0)."""
    rs = section.rope_scaling
    if not rs.factor:
        return {}
    from qwenlong_jax.models.config import RopeScaling

    return dict(
        rope_scaling=RopeScaling(
            factor=rs.factor,
            beta_fast=rs.beta_fast,
            beta_slow=rs.beta_slow,
            original_max_position_embeddings=rs.original_max_position_embeddings,
        ),
        max_position_embeddings=int(rs.original_max_position_embeddings * rs.factor),
    )


def exec_overrides(section: ModelSection) -> dict:
    """The run's execution settings (and rope scaling) laid over a checkpoint's config.json."""
    return dict(
        dtype=section.dtype,
        attention_impl=section.attention_impl,
        remat=section.remat,
        scan_layers=section.scan_layers,
        logits_chunk=section.logits_chunk,
        **rope_overrides(section),
    )


def build_model_config(section: ModelSection, vocab_size: int | None = None) -> ModelConfig:
    """ModelConfig for the run: the named size (or HF config.json) plus execution settings."""
    from qwenlong_jax import models

    overrides = dict(param_dtype=section.param_dtype, **exec_overrides(section))
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


def model_config(cfg: Config, vocab_size: int | None) -> ModelConfig:
    """The config of the model actually trained: the checkpoint's (config.json of
    model.init_from) when set, else the named size; with the run's execution settings."""
    from qwenlong_jax import models, paths

    m = cfg.model
    if not m.init_from:
        if m.size == "hf" and paths.is_remote(m.hf_path):  # config.json read from a local copy
            m = dataclasses.replace(m, hf_path=paths.local_copy(m.hf_path))
        return build_model_config(m, vocab_size)
    try:
        mcfg = models.read_hf_config(paths.local_copy(m.init_from), **exec_overrides(m))
    except models.CheckpointError:
        raise
    except (ValueError, OSError) as e:
        raise ConfigError(f"model.init_from: {e}") from None
    if m.size == "tiny" and vocab_size is not None and mcfg.vocab_size != vocab_size:
        raise ConfigError(f"model.init_from vocab {mcfg.vocab_size} != tokenizer vocab {vocab_size}")
    return mcfg
