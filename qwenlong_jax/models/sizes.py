"""Named model sizes. Shapes copied from each model's published config.json.

Keys used: hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim
(Qwen3; Qwen2 derives it), intermediate_size, vocab_size, rms_norm_eps, rope_theta,
max_position_embeddings, tie_word_embeddings.

R1-Distill-Qwen-{14,32}B are Qwen2.5-{14,32}B fine-tunes: same shapes (docs/recipe.md), but their
config.json sets rms_norm_eps 1e-5 and rope_theta 1e6 with max_position_embeddings 131072.
"""

from __future__ import annotations

from qwenlong_jax.models.config import ModelConfig, RopeScaling


def _qwen2(D, L, N, K, F, V=152064, *, tie=False, eps=1e-6, max_pos=32768, theta=1e6):
    return ModelConfig(
        model_type="qwen2",
        vocab_size=V,
        hidden_size=D,
        num_layers=L,
        num_heads=N,
        num_kv_heads=K,
        head_dim=D // N,
        intermediate_size=F,
        rms_norm_eps=eps,
        rope_theta=theta,
        max_position_embeddings=max_pos,
        tie_word_embeddings=tie,
        qkv_bias=True,
        qk_norm=False,
    )


def _qwen3(D, L, N, K, F, H=128, V=151936, *, tie=False):
    return ModelConfig(
        model_type="qwen3",
        vocab_size=V,
        hidden_size=D,
        num_layers=L,
        num_heads=N,
        num_kv_heads=K,
        head_dim=H,
        intermediate_size=F,
        rms_norm_eps=1e-6,
        rope_theta=1e6,
        max_position_embeddings=40960,
        tie_word_embeddings=tie,
        qkv_bias=False,
        qk_norm=True,
    )


SIZES = {
    # Qwen2.5 (Qwen/Qwen2.5-*/config.json)
    "qwen2.5-0.5b": lambda: _qwen2(896, 24, 14, 2, 4864, 151936, tie=True),
    "qwen2.5-1.5b": lambda: _qwen2(1536, 28, 12, 2, 8960, 151936, tie=True),
    "qwen2.5-7b": lambda: _qwen2(3584, 28, 28, 4, 18944),
    "qwen2.5-14b": lambda: _qwen2(5120, 48, 40, 8, 13824, eps=1e-5),
    "qwen2.5-32b": lambda: _qwen2(5120, 64, 40, 8, 27648, eps=1e-5),
    # DeepSeek-R1-Distill-Qwen (deepseek-ai/DeepSeek-R1-Distill-Qwen-*/config.json)
    "r1-distill-qwen-14b": lambda: _qwen2(5120, 48, 40, 8, 13824, eps=1e-5, max_pos=131072),
    "r1-distill-qwen-32b": lambda: _qwen2(5120, 64, 40, 8, 27648, eps=1e-5, max_pos=131072),
    # Qwen3 dense (Qwen/Qwen3-*/config.json)
    "qwen3-0.6b": lambda: _qwen3(1024, 28, 16, 8, 3072, tie=True),
    "qwen3-1.7b": lambda: _qwen3(2048, 28, 16, 8, 6144, tie=True),
    "qwen3-4b": lambda: _qwen3(2560, 36, 32, 8, 9728, tie=True),
    "qwen3-8b": lambda: _qwen3(4096, 36, 32, 8, 12288),
    "qwen3-14b": lambda: _qwen3(5120, 40, 40, 8, 17408),
    "qwen3-32b": lambda: _qwen3(5120, 64, 64, 8, 25600),
    # Tiny Qwen2-shaped model for CPU runs and tests (vocab set by the tokenizer).
    "tiny": lambda: ModelConfig(
        model_type="qwen2",
        vocab_size=1024,
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        intermediate_size=384,
        rms_norm_eps=1e-6,
        rope_theta=1e4,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    ),
}

# Published parameter counts (HF model cards / safetensors metadata), for the eval_shape test.
PUBLISHED_PARAMS = {
    "qwen2.5-0.5b": 494_032_768,
    "qwen2.5-1.5b": 1_543_714_304,
    "qwen2.5-7b": 7_615_616_512,
    "qwen2.5-14b": 14_770_033_664,
    "qwen2.5-32b": 32_763_876_352,
    "r1-distill-qwen-14b": 14_770_033_664,
    "r1-distill-qwen-32b": 32_763_876_352,
    "qwen3-0.6b": 596_049_920,
    # The hub page shows 2.03B: its safetensors store the tied lm_head a second time.
    "qwen3-1.7b": 1_720_574_976,
    "qwen3-4b": 4_022_468_096,
    "qwen3-8b": 8_190_735_360,
    "qwen3-14b": 14_768_307_200,
    "qwen3-32b": 32_762_123_264,
}


def yarn(cfg: ModelConfig, factor: float = 4.0, original: int = 32768) -> ModelConfig:
    """YaRN long-context extension, as Qwen's model cards recommend (factor 4 over 32768)."""
    return cfg.replace(
        rope_scaling=RopeScaling(factor=factor, original_max_position_embeddings=original),
        max_position_embeddings=int(original * factor),
    )


def get_model_config(name: str, **overrides) -> ModelConfig:
    if name not in SIZES:
        raise ValueError(f"model.size: unknown {name!r}; known: {', '.join(SIZES)}")
    return SIZES[name]().replace(**overrides) if overrides else SIZES[name]()
