"""`--config configs/x.py[:arg] [--config.a.b=value ...]` for the command-line tools, read by
absl's config_flags exactly as train.py reads it, with bad input as one-line ConfigErrors.

    fv, config = config_cli.new_flags(argv)                       # a private absl FlagValues
    devices = flags.DEFINE_integer("devices", 0, "...", flag_values=fv)
    cfg = config_cli.parse(fv, config, argv)                      # Config, or ConfigError
    cfg = config_cli.load_config("configs/x.py", ["rl.micro_batch=2"])   # from Python
"""
from __future__ import annotations

import os
import re
import sys
from typing import Sequence

from absl import flags
from ml_collections import config_flags

from qwenlong_jax.config import Config, ConfigError, from_config_dict

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def new_flags(argv: Sequence[str]) -> tuple[flags.FlagValues, flags.FlagHolder]:
    """A fresh FlagValues with the --config flag (overrides read from `argv`, no program name)."""
    if _REPO not in sys.path:
        sys.path.insert(0, _REPO)  # config files import configs.common
    fv = flags.FlagValues()
    holder = config_flags.DEFINE_config_file(
        "config", None, "Config file (optionally path:arg).", flag_values=fv, lock_config=True,
        sys_argv=["prog", *argv])
    return fv, holder


def parse(fv: flags.FlagValues, holder: flags.FlagHolder, argv: Sequence[str]) -> Config:
    """Parse `argv` into `fv`; the config with its overrides applied. ConfigError, one line, for
    an unknown flag, a stray argument, a missing or failing config file or a bad override."""
    try:
        rest = fv(["prog", *argv])
    except (flags.Error, OSError) as e:
        msg, first = _last_line(e), str(e).split(": ")[0]
        raise ConfigError(msg if msg.startswith("flag --") or not first.startswith("flag --")
                          else f"{first}: {msg}") from None
    except (AttributeError, KeyError) as e:  # --config.a.b=v naming a field or key that is not there
        raise ConfigError(override_error(e, argv)) from None
    if rest[1:]:
        raise ConfigError(f"unrecognized arguments: {' '.join(rest[1:])} (overrides are --config.a.b=value)")
    if holder.value is None:
        raise ConfigError("--config is required (configs/x.py[:arg])")
    try:
        config_dict = holder.value
        config_dict.to_dict()  # config_flags defers a missing file's error to first use
    except OSError as e:
        raise ConfigError(f"--config: {_last_line(e)}") from None
    return from_config_dict(config_dict)


def override_error(e: AttributeError | KeyError, argv: Sequence[str]) -> str:
    """One line for an override naming a field (or a phase, a dict key) the config does not
    have. ml_collections raises a KeyError holding "'name'\\nDid you mean ...", wrapped in an
    AttributeError for attribute access: unwrapped here, with the override that named it."""
    inner: BaseException = e
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    text = inner.args[0] if inner.args and isinstance(inner.args[0], str) else str(inner)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    name = lines[0].strip("'\"") if lines else text
    close = re.search(r'Did you mean "([^"]+)"', text)
    flag = next((a.split("=", 1)[0] for a in argv if a.startswith("--config.")
                 and name in a.split("=", 1)[0][len("--config."):].split(".")), "")
    return (f"--config override: the config has no field {name!r}" + (f" in {flag}" if flag else "")
            + (f" (did you mean {close.group(1)!r}?)" if close else ""))


def load_config(spec: str, overrides: Sequence[str] = ()) -> Config:
    """A config file path (optionally path:arg) plus "a.b=value" overrides -> Config, as
    `--config` of train.py reads it."""
    argv = [f"--config={spec}", *(f"--config.{o}" for o in overrides)]
    fv, holder = new_flags(argv)
    return parse(fv, holder, argv)


def config_target(spec: str) -> str:
    """The compile target a config file names (module-level COMPILE_TARGET, e.g. "h100:16x8"),
    "" when it names none or `spec` carries an :arg (a variant with another mesh)."""
    if ":" in spec or not os.path.isfile(spec):
        return ""
    import importlib.util
    mod_spec = importlib.util.spec_from_file_location("_config_file_target", spec)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return str(getattr(module, "COMPILE_TARGET", "") or "")


def _last_line(e: BaseException) -> str:
    """The innermost message of an error whose text may hold a traceback (config_flags)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
