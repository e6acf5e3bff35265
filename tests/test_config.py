"""Config files build and validate; bad values give one clear line naming the field."""

import importlib

import jax
import pytest

from qwenlong_jax import config as config_lib, models
from qwenlong_jax.config import ConfigError, from_config_dict
from qwenlong_jax.parallel import sharding

REAL = {"r1_distill_32b_tpu": 64, "r1_distill_32b_gpu": 128}


def _load(name, arg=None):
    return importlib.import_module(f"configs.{name}").get_config(arg)


@pytest.mark.parametrize("name,devices", REAL.items())
def test_real_configs_build_and_validate(name, devices):
    cfg = from_config_dict(_load(name))
    mcfg = config_lib.build_model_config(cfg.model)
    assert mcfg.num_params == 32_763_876_352
    assert [p.kind for p in cfg.phases] == ["sft", "rl", "rl"]
    assert [p.max_input for p in cfg.phases] == [20_000, 20_000, 60_000]
    assert cfg.rl.group_size == 8 and cfg.rl.clip_low == 0.2 and cfg.optim.lr == 2e-6
    mesh = sharding.abstract_mesh(cfg.mesh, devices)
    sharding.check_layout(
        models.logical_axes(mcfg),
        models.param_shapes(mcfg),
        mesh,
        {f"phases[{p.name}].batch": p.batch for p in cfg.phases},
    )


@pytest.mark.parametrize("name", REAL)
def test_real_configs_smoke_shrink_runs_forward_on_8_devices(name):
    cfg = from_config_dict(_load(name, "smoke"))
    mcfg = config_lib.build_model_config(cfg.model)
    mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:8])
    shardings = sharding.param_shardings(models.logical_axes(mcfg), models.param_shapes(mcfg), mesh)
    params = jax.jit(lambda k: models.init_params(mcfg, k), out_shardings=shardings)(jax.random.key(0))
    assert params["layers"]["q"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)


def test_unknown_key_suggests():
    c = _load("r1_distill_32b_gpu")
    c.rl.clip_lo = 0.3
    with pytest.raises(ConfigError, match=r"config\.rl\.clip_lo: unknown key \(did you mean 'clip_low'\?\)"):
        from_config_dict(c)


@pytest.mark.parametrize(
    "path,value,pattern",
    [
        ("rl.clip_high", 1.5, r"rl\.clip_high must be in \[0, 1\)"),
        ("rl.group_size", 1, r"rl\.group_size must be >= 2"),
        ("optim.lr", -1.0, r"optim\.lr must be > 0"),
        ("rl.loss_agg", "sum", r"config\.rl\.loss_agg: 'sum' is not one of"),
        ("rl.group_size", "8", r"config\.rl\.group_size: expected an int"),
        ("mesh.tensor", 0, r"mesh\.tensor must be a positive int or -1"),
    ],
)
def test_bad_values(path, value, pattern):
    c = _load("r1_distill_32b_gpu").to_dict()  # a plain dict: ConfigDict would type-lock first
    section, key = path.split(".")
    c[section][key] = value
    with pytest.raises(ConfigError, match=pattern):
        from_config_dict(c)


def test_bad_model_value():
    c = _load("r1_distill_32b_gpu")
    c.model.attention_impl = "sdpa"
    cfg = from_config_dict(c)
    with pytest.raises(ConfigError, match=r"model\.attention_impl: 'sdpa' is not one of xla, flash, blockwise, ring"):
        config_lib.build_model_config(cfg.model)
    c.model.size = "qwen9-1t"
    with pytest.raises(ConfigError, match=r"model\.size: unknown 'qwen9-1t'"):
        config_lib.build_model_config(from_config_dict(c).model)


def test_phase_overrides_by_name_and_order():
    c = _load("r1_distill_32b_gpu")
    c.phases.rl_60k.steps = 7
    cfg = from_config_dict(c)
    assert [p.name for p in cfg.phases] == ["sft", "rl_20k", "rl_60k"]
    assert cfg.phases[2].steps == 7


def test_round_trip_to_config_dict():
    cfg = from_config_dict(_load("r1_distill_32b_tpu"))
    assert from_config_dict(config_lib.to_config_dict(cfg)) == cfg
