"""Per-step metrics to JSONL and TensorBoard, and the PNG plots people look at.

`metrics.jsonl` holds one JSON object per line with `step` and `phase`; on resume the
lines past the restored step are dropped so a resumed run writes exactly the metrics of an
uninterrupted one. TensorBoard goes through tensorboardX (no TensorFlow needed).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile

import numpy as np

from qwenlong_jax import paths


def _strict(row: dict) -> dict:
    """JSON that strict parsers accept: a non-finite float becomes null and its key is listed
    under "nonfinite" (bare NaN/Infinity are not JSON)."""
    bad = sorted(k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v))
    if not bad:
        return row
    return {**{k: (None if k in bad else v) for k, v in row.items()}, "nonfinite": bad}


class MetricsWriter:
    """metrics.jsonl (strict JSON, one row per step) and TensorBoard scalars, in `workdir`
    (local or an object store, qwenlong_jax/paths/). TensorBoard is flushed by `flush()` (the trainer
    calls it at every checkpoint), so a run killed with -9 keeps every checkpointed step there.
    Object stores have no append: the whole (small) metrics file is rewritten per row, and
    TensorBoard is written to a local directory uploaded at every flush."""

    def __init__(self, workdir: str, resume_step: int = 0, enabled: bool = True, tensorboard: bool = True):
        self.path = paths.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self.remote = paths.is_remote(workdir)
        self._tb = None
        if not enabled:
            return
        paths.makedirs(workdir)
        self._lines: list[str] = []
        if paths.exists(self.path):
            self._lines = [
                ln if ln.endswith("\n") else ln + "\n"
                for ln in paths.read_text(self.path).splitlines()
                if ln.strip() and json.loads(ln)["step"] <= resume_step
            ]
        paths.write_text(self.path, "".join(self._lines))
        if tensorboard:
            self._tb_remote = paths.join(workdir, "tb")
            self._tb_dir = tempfile.mkdtemp(prefix="qwenlong_tb_") if self.remote else self._tb_remote
            self._tb_parts = 0
            self._tb = self._new_tb()

    def write(self, step: int, phase: str, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "phase": phase}
        for k, v in metrics.items():
            v = float(v) if isinstance(v, (int, float, np.generic, np.ndarray)) else v
            row[k] = v
            if self._tb is not None and isinstance(v, float) and math.isfinite(v):
                self._tb.add_scalar(k, v, step)
        line = json.dumps(_strict(row), allow_nan=False) + "\n"
        self._lines.append(line)
        if self.remote:
            paths.write_text(self.path, "".join(self._lines))
        else:
            with open(self.path, "a") as f:
                f.write(line)

    def _new_tb(self):
        from tensorboardX import SummaryWriter

        self._tb_parts += 1  # one event file per flush: a unique name even within one second
        return SummaryWriter(self._tb_dir, flush_secs=60, filename_suffix=f".{os.getpid()}.{self._tb_parts}")

    def flush(self) -> None:
        """Everything written so far is on disk (and uploaded) when this returns.
        tensorboardX's own flush() leaves events queued for its writer thread, so the event
        file is closed (which drains the queue) and the next rows go to a new one."""
        if self._tb is None:
            return
        self._tb.close()
        self._tb = self._new_tb()
        if self.remote:
            paths.upload(self._tb_dir, self._tb_remote)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
            if self.remote:
                paths.upload(self._tb_dir, self._tb_remote)


def read_metrics(workdir: str) -> list[dict]:
    path = paths.join(workdir, "metrics.jsonl")
    if not paths.exists(path):
        return []
    return [json.loads(ln) for ln in paths.read_text(path).splitlines() if ln.strip()]


TIME_PARTS = ("generate", "reward", "update", "eval")


def time_split(rows: list[dict]) -> dict:
    """Wall seconds per phase (in order) and in total, from the rows' `time/*_seconds`:
    generation, reward, update (RL: packing, logprobs and updates; SFT: the update), held-out
    eval, and `other` = the step's wall time minus those (data, host bookkeeping, checkpoints
    are outside steps). Rows without timing (written before it existed) count as nothing."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if "time/step_seconds" not in r:
            continue
        ph = out.setdefault(r["phase"], dict.fromkeys(TIME_PARTS + ("other", "step"), 0.0))
        parts = {p: float(r.get(f"time/{p}_seconds") or 0.0) for p in TIME_PARTS}
        for p, v in parts.items():
            ph[p] += v
        ph["step"] += float(r["time/step_seconds"])
        ph["other"] += float(r["time/step_seconds"]) - sum(parts.values())
    if out:
        out["total"] = {k: sum(ph[k] for ph in out.values()) for k in next(iter(out.values()))}
    return {ph: {k: round(v, 2) for k, v in d.items()} for ph, d in out.items()}


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
            pts = [
                (r["step"], r["reward_mean"]) for r in train if r["phase"] == ph and r.get("reward_mean") is not None
            ]  # null = non-finite
            if pts:
                ax.plot(*zip(*pts), "o-", ms=3, color=f"C{i}", label=ph)
        ax.set_xlabel("step")
        ax.set_ylabel("mean reward (rollouts)")
        ax.set_title("Reward per RL step, by phase")
        ax.legend()
        fig.tight_layout()
        path = paths.join(workdir, "reward.png")
        _savefig(fig, path)
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
        path = paths.join(workdir, "heldout.png")
        _savefig(fig, path)
        plt.close(fig)
        out.append(path)
    return out


def _savefig(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    paths.write_bytes(path, buf.getvalue())
