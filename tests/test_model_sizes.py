"""Every named size builds under jax.eval_shape with the published parameter count."""

import jax
import pytest

from qwenlong_jax import models
from qwenlong_jax.models.sizes import PUBLISHED_PARAMS


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_eval_shape_param_count(name):
    cfg = models.get_model_config(name, param_dtype="bfloat16")
    shapes = jax.eval_shape(lambda k: models.init_params(cfg, k), jax.random.key(0))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(shapes))
    total = sum(x.size for x in jax.tree.leaves(shapes))
    assert total == PUBLISHED_PARAMS[name] == cfg.num_params


def test_r1_distill_32b_shape_facts():
    cfg = models.get_model_config("r1-distill-qwen-32b")
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (5120, 64, 40, 8, 128)
    assert (cfg.intermediate_size, cfg.vocab_size, cfg.rms_norm_eps, cfg.rope_theta) == (27648, 152064, 1e-5, 1e6)
    assert cfg.qkv_bias and not cfg.qk_norm and not cfg.tie_word_embeddings
    assert round(cfg.num_params / 1e9, 2) == 32.76
    long = models.yarn(cfg)
    assert long.rope_scaling.factor == 4.0 and long.rope_scaling.original_max_position_embeddings == 32768


@pytest.mark.parametrize(
    "field,value,pattern",
    [
        ("num_heads", 6, r"model\.num_heads \(6\) must be a multiple of model\.num_kv_heads \(4\)"),
        ("hidden_size", 0, r"model\.hidden_size must be a positive int"),
        ("model_type", "llama", r"model\.model_type: unsupported 'llama'"),
    ],
)
def test_model_config_errors(field, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        models.get_model_config("qwen3-8b", num_kv_heads=4, **{field: value})
