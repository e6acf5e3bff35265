"""One command-line style for every command: absl flags, `--config` read by ml_collections'
config_flags, `--help` / `--helpfull`, and one `error:` line naming the flag for bad input.

Each call gets its own FlagValues, so `main(argv)` runs in-process (tests) as from the shell:

    cmd = flags.Command(__name__, __doc__, argv, config="configs/default.py")  # or config=None
    absl_flags.DEFINE_integer("devices", 0, "...", flag_values=cmd.fv)
    args = cmd.parse(required=("out",))    # the flag values as a Namespace; FlagError, one line
    cfg = cmd.config()                     # Config (with its --config.a.b=v overrides); ConfigError
    int_list_flag.DEFINE_integers("lengths", [1024], "...", flag_values=cmd.fv)  # --lengths 1024,2048
    cfg = config_files.load_config("configs/x.py", ["rl.micro_batch=2"])  # from Python
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from absl import flags
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELP = {
    "-h": "short",
    "-?": "short",
    "--help": "short",
    "-help": "short",
    "--helpshort": "short",
    "--helpfull": "full",
    "-helpfull": "full",
}
_HELP_FLAGS = ("help", "helpshort", "helpfull")


class FlagError(ValueError):
    """A bad command line: an unknown flag, a value of the wrong type, a missing required flag.
    (A bad config value is the config's ConfigError; this module imports the config only when a
    command reads one, so that --help and a bad flag answer at once.)"""


class Command:
    """One command line: its FlagValues (with --help, --helpfull and, when `config` is not None,
    --config with that default: "" = required), the arguments (no program name) and its usage."""

    def __init__(self, module: str, doc: str | None, argv: Sequence[str] | None = None, config: str | None = None):
        self.module, self.doc = module, (doc or "").strip("\n")
        self.argv = arguments(argv)
        self.fv = flags.FlagValues()
        for name in _HELP_FLAGS:
            flags.DEFINE_boolean(
                name, False, "print the usage" + (" with every flag" if name == "helpfull" else ""), flag_values=self.fv
            )
        self._config = None
        if config is not None:
            if REPO not in sys.path:
                sys.path.insert(0, REPO)  # config files import configs.common
            self._config = config_flags.DEFINE_config_file(
                "config",
                config or None,
                "config file (configs/x.py, optionally path:arg); override its fields with --config.a.b=value",
                flag_values=self.fv,
                lock_config=True,
                sys_argv=["prog", *self.argv],
            )
            self.fv.register_key_flag_for_module(module, self.fv["config"])

    def usage(self, full: bool = False) -> str:
        """--help: the command's description and flags; --helpfull: every flag, and with a
        config, every field an override --config.a.b=value can set (with its value)."""
        if not full:
            flag_help = self.fv.module_help(self.module)
            return f"{self.doc}\n\nflags:{flag_help}\n\nTry --helpfull to get a list of all flags."
        text = f"{self.doc}\n\nflags:{self.fv.get_help(include_special_flags=False)}"
        try:  # the config the other arguments name (or the default), for its fields
            _parse_flag_values(self.fv, [a for a in self.argv if a not in HELP])
            fields = _flatten(self._config.value.to_dict()) if self._config is not None and self._config.value else {}
        except (FlagError, OSError):
            fields = {}
        if fields:
            text += f"\n\nconfig fields of {self.config_filename} (override with --config.FIELD=value):\n" + "\n".join(
                f"  --config.{k}={v!r}" for k, v in fields.items()
            )
        return text

    def parse(self, required: Sequence[str] = ()) -> types.SimpleNamespace:
        """Parse the arguments: --help/--helpfull print the usage and exit; the command's flag
        values as a Namespace (a flag `a-b` as `a_b`); FlagError, one line, for an unknown flag,
        a bad value, a missing required flag or a stray argument."""
        wanted = next((HELP[a] for a in _before_dashes(self.argv) if a in HELP), None)
        if wanted:
            try:
                print(self.usage(full=wanted == "full"), flush=True)
            except BrokenPipeError:  # `--help | head`
                sys.stdout = None
            sys.exit(0)
        rest = _parse_flag_values(self.fv, self.argv)
        if rest:
            raise FlagError(
                f"unrecognized arguments: {' '.join(rest)}"
                + (" (overrides are --config.a.b=value)" if self._config is not None else "")
            )
        for name in required:
            if self.fv[name].value is None:
                raise FlagError(f"--{name} is required")
        names = [f.name for f in self.fv.get_key_flags_for_module(self.module) if f.name != "config"]
        return types.SimpleNamespace(**{n.replace("-", "_"): self.fv[n].value for n in names})

    def config(self):
        """The parsed --config with its overrides (after `parse`) as a Config; FlagError or
        ConfigError, one line."""
        from qwenlong_jax.config import from_config_dict

        if self._config.value is None:
            raise FlagError("--config is required (configs/x.py[:arg])")
        try:
            config_dict = self._config.value
            config_dict.to_dict()  # config_flags defers a missing file's error to first use
        except OSError as e:
            raise FlagError(f"--config: {_last_line(e)}") from None
        return from_config_dict(config_dict)

    @property
    def config_filename(self) -> str:
        return config_flags.get_config_filename(self.fv["config"])


def arguments(argv: Sequence[str] | None) -> list[str]:
    """The command's arguments: `argv`, or the process's (no program name)."""
    return list(sys.argv[1:] if argv is None else argv)


def _parse_flag_values(fv: flags.FlagValues, argv: Sequence[str]) -> list[str]:
    """absl's parse of `argv` (no program name) into `fv`: the arguments left over; FlagError
    (one line, naming the flag) for an unknown flag, a bad value, a missing or failing config
    file, or an override naming a field the config does not have."""
    try:
        return fv(["prog", *argv])[1:]
    except (flags.Error, OSError) as e:
        msg, first = _last_line(e), str(e).split(": ")[0]
        raise FlagError(
            msg if msg.startswith("flag --") or not first.startswith("flag --") else f"{first}: {msg}"
        ) from None
    except (AttributeError, KeyError) as e:  # --config.a.b=v naming a field or key that is not there
        raise FlagError(override_error(e, argv)) from None


def run(main: Callable[[list[str]], Any], absl_app: bool = False) -> None:
    """`python -m qwenlong_jax.X`: main(the arguments); the exit status is main's when it returns
    an int (plan, compile), else 0; errors exit through SystemExit("error: ..."). `absl_app`:
    inside absl's app.run (absl logging set up as in any absl program: the trainer, whose
    libraries log through it); the command's own flags are still parsed by `main`."""

    def status(out) -> int:
        return out if isinstance(out, int) and not isinstance(out, bool) else 0

    if absl_app:
        from absl import app

        app.run(lambda argv: status(main(argv[1:])), flags_parser=lambda argv: (flags.FLAGS(argv[:1]), argv)[1])
    sys.exit(status(main(sys.argv[1:])))


def fail(e: BaseException | str) -> NoReturn:
    """Exit with one `error:` line on stderr (status 1)."""
    sys.exit(f"error: {e}")


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
    flag = next(
        (
            a.split("=", 1)[0]
            for a in argv
            if a.startswith("--config.") and name in a.split("=", 1)[0][len("--config.") :].split(".")
        ),
        "",
    )
    return (
        f"--config override: the config has no field {name!r}"
        + (f" in {flag}" if flag else "")
        + (f" (did you mean {close.group(1)!r}?)" if close else "")
    )


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _before_dashes(argv: Sequence[str]) -> list[str]:
    return list(argv[: argv.index("--")] if "--" in argv else argv)


def _last_line(e: BaseException) -> str:
    """The innermost message of an error whose text may hold a traceback (config_flags)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
