"""The run configuration: `from qwenlong_jax.config import Config, from_config_dict`.

    schema.py   the frozen sections (Config, ModelSection, PhaseConfig, DataConfig, ...) and
                from_config_dict, with each section's own range checks
    optim.py    the optim and rl sections
    validation.py  the checks that need the model, the mesh and the step shapes (run/spec.py)
    load.py     ConfigDict <-> dataclasses: unknown keys, types, finite numbers; ConfigError
    model.py    build_model_config: the ModelConfig a model section names

schema.py's names load on first use: the config's sections import their own validators
(e.g. rewards.judge.JudgeConfig uses load.py), so importing load.py must not import schema.py.
"""

from qwenlong_jax.config.load import ConfigError, at_least, build, positive, to_config_dict

_FROM = {
    "schema": (
        "BadRecordPolicy",
        "Config",
        "DataConfig",
        "JudgeConfig",
        "ModelSection",
        "PhaseConfig",
        "PhaseKind",
        "RetroConfig",
        "RopeScalingSection",
        "from_config_dict",
    ),
    "optim": ("KLType", "LossAgg", "LossScope", "OptimConfig", "RLConfig"),
    "model": ("build_model_config", "rope_overrides"),
}
__all__ = ["ConfigError", "at_least", "build", "positive", "to_config_dict", *(n for v in _FROM.values() for n in v)]


def __getattr__(name: str):
    import importlib

    for module, names in _FROM.items():
        if name in names:
            return getattr(importlib.import_module(f"qwenlong_jax.config.{module}"), name)
    raise AttributeError(f"module 'qwenlong_jax.config' has no attribute {name!r}")
