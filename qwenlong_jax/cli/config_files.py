"""A config file read from Python as `--config` reads it (with "a.b=value" overrides), and the
compile target a config file names."""

from __future__ import annotations

import os
from collections.abc import Sequence

from qwenlong_jax.cli.flags import Command, FlagError


def load_config(spec: str, overrides: Sequence[str] = ()):
    """A config file path (optionally path:arg) plus "a.b=value" overrides -> Config, as
    `--config` of the train command reads it; ConfigError, one line."""
    from qwenlong_jax.config import ConfigError

    argv = [f"--config={spec}", *(f"--config.{o}" for o in overrides)]
    cmd = Command(__name__, None, argv, config="")
    try:
        cmd.parse()
        return cmd.config()
    except FlagError as e:
        raise ConfigError(str(e)) from None


def config_target(spec: str) -> str:
    """The compile target a config file names (module-level COMPILE_TARGET, e.g. "h100:16x8"),
    "" when it names none or `spec` carries an :arg (a variant with another mesh)."""
    if ":" in spec or not os.path.isfile(spec):
        return ""
    import importlib.util

    mod_spec = importlib.util.spec_from_file_location("_config_file_target", spec)
    if mod_spec is None or mod_spec.loader is None:  # not a Python file: loading the config says why
        return ""
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return str(getattr(module, "COMPILE_TARGET", "") or "")
