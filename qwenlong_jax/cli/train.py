"""python -m qwenlong_jax.train [--config configs/x.py[:arg]] [--config.a.b=v ...] [--workdir DIR]

Runs the whole recipe (SFT warm-up, RL phases of growing context, evaluation, checkpoints,
HF export, plots) for a config. Without --config, configs/default.py: the embedded tiny
model on synthetic long-document QA, on CPU. Re-running with the same --workdir resumes.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Sequence

from absl import flags as absl_flags, logging

from qwenlong_jax.cli import flags

DEFAULT_CONFIG = os.path.join(flags.REPO, "configs", "default.py")


def parse(argv: Sequence[str] | None = None) -> tuple[flags.Command, types.SimpleNamespace]:
    """The command line: (the Command, its flag values); FlagError (one line) for bad flags."""
    cmd = flags.Command(__name__, __doc__, argv, config=DEFAULT_CONFIG)
    absl_flags.DEFINE_string(
        "workdir", "runs/default", "output directory (resumes if it has checkpoints)", flag_values=cmd.fv
    )
    absl_flags.DEFINE_float(
        "stop_grace_s",
        120.0,
        "after SIGTERM/SIGINT, seconds the current step has to finish and checkpoint "
        "before the process exits anyway (naming the latest checkpoint)",
        flag_values=cmd.fv,
    )
    return cmd, cmd.parse()


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's to fix: printed as one `error:` line, never a traceback."""
    from qwenlong_jax.config import ConfigError
    from qwenlong_jax.data.schema import DataError
    from qwenlong_jax.models import CheckpointError
    from qwenlong_jax.paths import PathError
    from qwenlong_jax.run.checkpoint import CheckpointSaveError
    from qwenlong_jax.run.trainer import TrainingError
    from qwenlong_jax.run.workdir_lock import WorkdirLocked

    return (
        flags.FlagError,
        ConfigError,
        DataError,
        CheckpointError,
        CheckpointSaveError,
        TrainingError,
        PathError,
        WorkdirLocked,
    )


def main(argv: Sequence[str] | None = None) -> None:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
        cmd, args = parse(argv)
    except flags.FlagError as e:
        flags.fail(e)
    from qwenlong_jax.run.stop import StopSignals

    if not (args.stop_grace_s > 0 and args.stop_grace_s < float("inf")):
        flags.fail(f"--stop_grace_s must be a finite number > 0, got {args.stop_grace_s}")
    with StopSignals(args.stop_grace_s) as signals:  # from here a signal ends the process in bounded time
        summary = _train(cmd, args.workdir, signals)
    if summary.get("already_finished"):
        return  # the trainer said so in one line
    if summary.get("stopped"):
        print(f"stopped at step {summary['step']}; checkpoint saved in {args.workdir}/checkpoints")
        return
    print_summary(summary)


def _train(cmd: flags.Command, workdir: str, signals) -> dict:
    from qwenlong_jax.run.trainer import Trainer

    try:
        cfg = cmd.config()
        return Trainer(cfg, workdir, signals=signals).run()
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
        print(
            "  held-out accuracy: not measured (no held-out set: data.eval_files, or with synthetic data "
            "data.eval_lengths, is empty)"
        )
    split = summary.get("time_split_seconds") or {}
    if split:
        print("  wall seconds by part (generate / reward / update / eval / other = step - parts):")
        for phase, t in split.items():
            print(
                f"    {phase:<10s} "
                + "  ".join(f"{k} {t[k]:7.1f}" for k in ("generate", "reward", "update", "eval", "other"))
                + f"  = steps {t['step']:7.1f}"
            )
    if summary.get("data"):
        print(
            "  data rows left out: "
            + ", ".join(f"{k}={v}" for k, v in summary["data"].items())
            + " (skipped = data.bad_records='skip'; dropped/too_long = longer than every phase's max_input)"
        )
    if summary.get("export"):
        print(f"  HF checkpoint: {summary['export']}")
    for p in summary.get("plots", []):
        print(f"  plot: {p}")
