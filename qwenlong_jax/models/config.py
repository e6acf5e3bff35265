"""ModelConfig: the frozen, validated description of a Qwen2/Qwen3 dense decoder.

Field names follow our code; each field's comment names the HF config.json key it maps to.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

ModelType = Literal["qwen2", "qwen3"]
AttentionImpl = Literal["xla", "flash", "blockwise", "ring"]
RematPolicy = Literal["none", "full", "dots", "dots_no_batch"]
DType = Literal["float32", "bfloat16", "float16"]

MODEL_TYPES = ("qwen2", "qwen3")
ATTENTION_IMPLS = ("xla", "flash", "blockwise", "ring")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """YaRN scaling (HF `rope_scaling` / `rope_parameters` with rope_type "yarn")."""

    factor: float  # factor
    original_max_position_embeddings: int  # original_max_position_embeddings
    beta_fast: float = 32.0  # beta_fast
    beta_slow: float = 1.0  # beta_slow
    attention_factor: float | None = None  # attention_factor (None: 0.1*ln(factor)+1)
    truncate: bool = True  # truncate

    def __post_init__(self):
        if self.factor <= 0:
            raise ValueError(f"rope_scaling.factor must be > 0, got {self.factor}")
        if self.original_max_position_embeddings <= 0:
            raise ValueError(
                "rope_scaling.original_max_position_embeddings must be > 0, got "
                f"{self.original_max_position_embeddings}"
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    model_type: ModelType  # model_type
    vocab_size: int  # vocab_size
    hidden_size: int  # hidden_size  (D)
    num_layers: int  # num_hidden_layers  (L)
    num_heads: int  # num_attention_heads  (N)
    num_kv_heads: int  # num_key_value_heads  (K)
    head_dim: int  # head_dim (Qwen2: hidden_size // num_attention_heads)  (H)
    intermediate_size: int  # intermediate_size  (F)
    rms_norm_eps: float = 1e-6  # rms_norm_eps
    rope_theta: float = 1e6  # rope_theta / rope_parameters.rope_theta
    rope_scaling: RopeScaling | None = None  # rope_scaling / rope_parameters (yarn only)
    max_position_embeddings: int = 32768  # max_position_embeddings
    tie_word_embeddings: bool = False  # tie_word_embeddings
    qkv_bias: bool = True  # Qwen2: True (attention_bias in Qwen3 configs, False there)
    qk_norm: bool = False  # Qwen3: per-head RMSNorm on q and k
    # Numerics and execution (not in HF config.json).
    param_dtype: DType = "float32"
    dtype: DType = "float32"  # compute dtype; logits are always float32
    attention_impl: AttentionImpl = "xla"
    remat: RematPolicy = "none"
    scan_layers: bool = True
    logits_chunk: int = 1024  # tokens per LM-head chunk when computing logprobs/loss

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model.model_type: unsupported {self.model_type!r}; supported: {', '.join(MODEL_TYPES)}")
        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "intermediate_size",
            "max_position_embeddings",
            "logits_chunk",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"model.{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_heads ({self.num_heads}) must be a multiple of model.num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"model.head_dim must be even for RoPE, got {self.head_dim}")
        if not 0 < self.rms_norm_eps < 1:
            raise ValueError(f"model.rms_norm_eps must be in (0, 1), got {self.rms_norm_eps}")
        if self.rope_theta <= 1:
            raise ValueError(f"model.rope_theta must be > 1, got {self.rope_theta}")
        for name, allowed in (
            ("param_dtype", DTYPES),
            ("dtype", DTYPES),
            ("attention_impl", ATTENTION_IMPLS),
            ("remat", REMAT_POLICIES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name}: {getattr(self, name)!r} is not one of {', '.join(allowed)}")

    @property
    def num_params(self) -> int:
        """Parameter count, as HF counts it (tied embeddings counted once)."""
        D, F, L, V = self.hidden_size, self.intermediate_size, self.num_layers, self.vocab_size
        N, K, H = self.num_heads, self.num_kv_heads, self.head_dim
        attn = D * N * H + 2 * D * K * H + N * H * D
        if self.qkv_bias:
            attn += N * H + 2 * K * H
        if self.qk_norm:
            attn += 2 * H
        per_layer = attn + 3 * D * F + 2 * D
        embed = V * D * (1 if self.tie_word_embeddings else 2)
        return L * per_layer + embed + D

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)
