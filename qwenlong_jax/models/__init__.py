"""Qwen2 / Qwen3 dense decoders: config, sizes, params, forward, HF checkpoint interop.

cfg, params = models.load_hf_checkpoint(path, dtype=jnp.float32)
models.save_hf_checkpoint(path, cfg, params)
logits_BTV = models.forward(cfg, params, tokens_BT, positions_BT=None, segment_ids_BT=None)
"""

from qwenlong_jax.models.config import ModelConfig, RopeScaling  # noqa: F401
from qwenlong_jax.models.hf_config import CheckpointError, model_config_from_hf, read_hf_config  # noqa: F401
from qwenlong_jax.models.hf_load import load_hf_checkpoint  # noqa: F401
from qwenlong_jax.models.hf_save import save_hf_checkpoint  # noqa: F401
from qwenlong_jax.models.params import (  # noqa: F401
    count_params,
    init_params,
    logical_axes,
    param_shapes,
    param_specs,
)
from qwenlong_jax.models.sizes import SIZES, get_model_config, yarn  # noqa: F401
from qwenlong_jax.models.transformer import (  # noqa: F401
    forward,
    hidden_states,
    lm_head_weight,
    logits_from_hidden,
)
