"""python -m qwenlong_jax.train [--config configs/x.py[:arg]] [--config.a.b=v ...] [--workdir DIR]

Runs the whole recipe (SFT warm-up, RL phases of growing context, evaluation, checkpoints,
HF export, plots) for a config. Without --config, configs/default.py: the embedded tiny
model on synthetic long-document QA, on CPU. Re-running with the same --workdir resumes.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # config files import `configs.common`
    sys.path.insert(0, _REPO)

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_REPO, "configs", "default.py"), "Config file (optionally path:arg).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Output directory (resumes if it has checkpoints).")
_STOP_GRACE = flags.DEFINE_float(
    "stop_grace_s", 120.0, "After SIGTERM/SIGINT, seconds the current step has to finish and checkpoint "
    "before the process exits anyway (naming the latest checkpoint).")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad --config (missing file, a config file that raises, an
    override of the wrong type) reported as one line: config files are user input."""
    try:
        return flags.FLAGS(argv)
    except (flags.Error, OSError) as e:
        msg, first = _last_line(e), str(e).split(": ")[0]
        sys.exit(f"error: {msg}" if msg.startswith("flag --") or not first.startswith("flag --")
                 else f"error: {first}: {msg}")
    except (AttributeError, KeyError) as e:  # --config.a.b=v naming a field or key that is not there
        from qwenlong_jax.config_cli import override_error
        sys.exit(f"error: {override_error(e, argv)}")


def _last_line(e: BaseException) -> str:
    """The innermost message of an error whose text may hold a traceback (config_flags)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's to fix: printed as one `error:` line, never a traceback."""
    from qwenlong_jax.run.checkpoint import CheckpointSaveError
    from qwenlong_jax.config import ConfigError
    from qwenlong_jax.data.schema import DataError
    from qwenlong_jax.models import CheckpointError
    from qwenlong_jax.paths import PathError
    from qwenlong_jax.run.trainer import TrainingError
    from qwenlong_jax.run.workdir_lock import WorkdirLocked
    return (ConfigError, DataError, CheckpointError, CheckpointSaveError, TrainingError, PathError,
            WorkdirLocked)


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    from qwenlong_jax.run.stop import StopSignals

    if not (_STOP_GRACE.value > 0 and _STOP_GRACE.value < float("inf")):
        sys.exit(f"error: --stop_grace_s must be a finite number > 0, got {_STOP_GRACE.value}")
    with StopSignals(_STOP_GRACE.value) as signals:  # from here a signal ends the process in bounded time
        summary = _train(signals)
    if summary.get("already_finished"):
        return  # the trainer said so in one line
    if summary.get("stopped"):
        print(f"stopped at step {summary['step']}; checkpoint saved in {_WORKDIR.value}/checkpoints")
        return
    print_summary(summary)


def _train(signals) -> dict:
    from qwenlong_jax.config import from_config_dict
    from qwenlong_jax.run.trainer import Trainer

    try:
        config_dict = _CONFIG.value
        config_dict.to_dict()  # config_flags defers a missing file's error to first use
    except OSError as e:
        sys.exit(f"error: --config: {_last_line(e)}")
    try:
        cfg = from_config_dict(config_dict)
        return Trainer(cfg, _WORKDIR.value, signals=signals).run()
    except user_errors() as e:
        from qwenlong_jax.run.checkpoint import CheckpointSaveError
        from qwenlong_jax.run.trainer import TrainingError
        # Raised mid-run: the progress bar's line is open, so the error starts a new one.
        line = f"{chr(10) if isinstance(e, (CheckpointSaveError, TrainingError)) else ''}error: {e}"
        if isinstance(e, CheckpointSaveError):  # orbax's failed writer threads would print at exit
            sys.stdout.flush()
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
            os._exit(1)
        sys.exit(line)


def print_summary(summary: dict) -> None:
    print(f"\ndone: {summary['steps']} steps in {summary['minutes']:.1f} min")
    by_phase: dict[str, dict] = {}
    for ev in summary["evals"]:
        by_phase[ev["phase"]] = ev
    for phase, ev in by_phase.items():
        accs = "  ".join(f"{k.split('@')[1]} tok: {v:.1%}" for k, v in ev.items() if k.startswith("heldout/acc@"))
        if accs:
            print(f"  held-out accuracy after {phase:<10s} {accs}")
    if not any(k.startswith("heldout/acc@") for ev in summary["evals"] for k in ev):
        print("  held-out accuracy: not measured (no held-out set: data.eval_files, or with synthetic data "
              "data.eval_lengths, is empty)")
    split = summary.get("time_split_seconds") or {}
    if split:
        print("  wall seconds by part (generate / reward / update / eval / other = step - parts):")
        for phase, t in split.items():
            print(f"    {phase:<10s} " + "  ".join(f"{k} {t[k]:7.1f}" for k in
                                                     ("generate", "reward", "update", "eval", "other"))
                  + f"  = steps {t['step']:7.1f}")
    if summary.get("data"):
        print("  data rows left out: " + ", ".join(f"{k}={v}" for k, v in summary["data"].items())
              + " (skipped = data.bad_records='skip'; dropped/too_long = longer than every phase's max_input)")
    if summary.get("export"):
        print(f"  HF checkpoint: {summary['export']}")
    for p in summary.get("plots", []):
        print(f"  plot: {p}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
