"""model.rope_scaling: the config section reaches the built model, the 32B configs set the
paper's YaRN, and an HF checkpoint carrying it round-trips."""

import jax
import pytest

from configs import r1_distill_32b_gpu, r1_distill_32b_tpu, smoke
from qwenlong_jax import models
from qwenlong_jax.config import ConfigError, build_model_config, from_config_dict
from qwenlong_jax.run.spec import RunSpec


@pytest.mark.parametrize("module", [r1_distill_32b_tpu, r1_distill_32b_gpu])
def test_32b_configs_build_a_yarn_model(module):
    cfg = from_config_dict(module.get_config())
    mcfg = RunSpec.planned(cfg).mcfg
    assert mcfg.rope_scaling == models.RopeScaling(factor=4.0, original_max_position_embeddings=32768)
    assert mcfg.max_position_embeddings == 4 * 32768
    assert mcfg == models.yarn(models.get_model_config("r1-distill-qwen-32b")).replace(
        param_dtype=mcfg.param_dtype,
        dtype=mcfg.dtype,
        attention_impl=mcfg.attention_impl,
        remat=mcfg.remat,
        scan_layers=mcfg.scan_layers,
        logits_chunk=mcfg.logits_chunk,
    )


def test_default_is_no_scaling_and_bad_values_are_config_errors():
    c = smoke.get_config()
    assert build_model_config(from_config_dict(c).model, 512).rope_scaling is None
    c.model.rope_scaling.factor = 4.0
    with pytest.raises(ConfigError, match="original_max_position_embeddings must be > 0"):
        from_config_dict(c)
    c.model.rope_scaling.update(factor=-1.0, original_max_position_embeddings=64)
    with pytest.raises(ConfigError, match="model.rope_scaling.factor must be >= 0"):
        from_config_dict(c)


def test_hf_checkpoint_with_yarn_round_trips(tmp_path):
    c = smoke.get_config()
    c.model.rope_scaling.update(factor=4.0, original_max_position_embeddings=64, beta_fast=16.0)
    mcfg = build_model_config(from_config_dict(c).model, 512)
    assert mcfg.rope_scaling.factor == 4.0 and mcfg.rope_scaling.beta_fast == 16.0
    params = models.init_params(mcfg, jax.random.key(0))
    models.save_hf_checkpoint(str(tmp_path), mcfg, params)
    loaded, _ = models.load_hf_checkpoint(str(tmp_path))
    assert loaded.rope_scaling == mcfg.rope_scaling
    assert loaded.max_position_embeddings == mcfg.max_position_embeddings == 256
    assert models.read_hf_config(str(tmp_path)).rope_scaling == mcfg.rope_scaling
