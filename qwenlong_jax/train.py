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


def main(argv) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    from qwenlong_jax.config import ConfigError, from_config_dict
    from qwenlong_jax.data.schema import DataError
    from qwenlong_jax.models import CheckpointError
    from qwenlong_jax.trainer import Trainer, TrainingError

    try:
        cfg = from_config_dict(_CONFIG.value)
        summary = Trainer(cfg, _WORKDIR.value).run()
    except (ConfigError, DataError, CheckpointError, TrainingError) as e:
        sys.exit(f"error: {e}")
    if summary.get("stopped"):
        print(f"stopped at step {summary['step']}; checkpoint saved in {_WORKDIR.value}/checkpoints")
        return
    print_summary(summary)


def print_summary(summary: dict) -> None:
    print(f"\ndone: {summary['steps']} steps in {summary['minutes']:.1f} min")
    by_phase: dict[str, dict] = {}
    for ev in summary["evals"]:
        by_phase[ev["phase"]] = ev
    for phase, ev in by_phase.items():
        accs = "  ".join(f"{k.split('@')[1]} tok: {v:.1%}" for k, v in ev.items() if k.startswith("heldout/acc@"))
        print(f"  held-out accuracy after {phase:<10s} {accs}")
    if summary.get("export"):
        print(f"  HF checkpoint: {summary['export']}")
    for p in summary.get("plots", []):
        print(f"  plot: {p}")


if __name__ == "__main__":
    app.run(main)
