"""Per-step metrics to JSONL and TensorBoard, and the PNG plots people look at.

`metrics.jsonl` holds one JSON object per line with `step` and `phase`; on resume the
lines past the restored step are dropped so a resumed run writes exactly the metrics of an
uninterrupted one. TensorBoard goes through tensorboardX (no TensorFlow needed).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np


class MetricsWriter:
    def __init__(self, workdir: str, resume_step: int = 0, enabled: bool = True, tensorboard: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        kept = []
        if os.path.exists(self.path):
            with open(self.path) as f:
                kept = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= resume_step]
        with open(self.path, "w") as f:
            f.writelines(kept)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, phase: str, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "phase": phase}
        for k, v in metrics.items():
            v = float(v) if isinstance(v, (int, float, np.generic, np.ndarray)) else v
            row[k] = v
            if self._tb is not None and isinstance(v, float) and math.isfinite(v):
                self._tb.add_scalar(k, v, step)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def plot_run(workdir: str) -> list[str]:
    """reward.png (reward per step, coloured by phase) and heldout.png (held-out accuracy by
    document length at each evaluation). Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    out = []
    train = [r for r in rows if "reward_mean" in r or "sft/nll" in r]
    if train:
        fig, ax = plt.subplots(figsize=(7, 4))
        phases = list(dict.fromkeys(r["phase"] for r in train))
        for i, ph in enumerate(phases):
            pts = [(r["step"], r["reward_mean"]) for r in train if r["phase"] == ph and "reward_mean" in r]
            if pts:
                ax.plot(*zip(*pts), "o-", ms=3, color=f"C{i}", label=ph)
        ax.set_xlabel("step")
        ax.set_ylabel("mean reward (rollouts)")
        ax.set_title("Reward per RL step, by phase")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(workdir, "reward.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out.append(path)
    evals = [r for r in rows if any(k.startswith("heldout/acc@") for k in r)]
    if evals:
        fig, ax = plt.subplots(figsize=(7, 4))
        lengths = sorted({int(k.split("@")[1]) for r in evals for k in r if k.startswith("heldout/acc@")})
        for r in evals:
            xs = [n for n in lengths if f"heldout/acc@{n}" in r]
            ax.plot(xs, [r[f"heldout/acc@{n}"] for n in xs], "o-", label=f"{r['phase']} (step {r['step']})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("document length (tokens)")
        ax.set_ylabel("held-out accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("Held-out accuracy by context length")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(workdir, "heldout.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out.append(path)
    return out
