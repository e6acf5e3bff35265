"""The smoke config as 2 JAX processes on this machine (jax.distributed over loopback, gloo CPU
collectives), 4 CPU devices each, one 8-device mesh: both processes run the real entry point,
agree on every metric, and write one checkpoint and one HF export."""

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwenlong_jax import models
from qwenlong_jax.run.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("_per_s", "_seconds")  # wall-clock rates and times differ between processes by nature


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("multihost"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=ROOT)
    procs = []
    with contextlib.ExitStack() as logs:
        for pid in range(2):
            cmd = [
                sys.executable,
                "-m",
                "qwenlong_jax.train",
                "--config",
                "configs/smoke.py:multihost",
                "--workdir",
                workdir,
                f"--config.coordinator_address=localhost:{port}",
                "--config.num_processes=2",
                f"--config.process_id={pid}",
                "--config.log_all_processes=True",
            ]
            log = logs.enter_context(open(os.path.join(workdir, f"log_{pid}.txt"), "w"))
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=900))
            except subprocess.TimeoutExpired:
                for q in procs:
                    q.kill()
                codes.append("timeout")
    if codes != [0, 0]:
        tails = [Path(os.path.join(workdir, f"log_{i}.txt")).read_text()[-3000:] for i in range(2)]
        pytest.fail(f"exit codes {codes}\n--- process 0 ---\n{tails[0]}\n--- process 1 ---\n{tails[1]}")
    return workdir


def _comparable(rows):
    return [{k: v for k, v in r.items() if not k.endswith(TIMING)} for r in rows]


def test_processes_agree_on_every_metric(two_process_run):
    rows0 = read_metrics(two_process_run)
    rows1 = read_metrics(os.path.join(two_process_run, "process_1"))
    assert [r["step"] for r in rows0] == list(range(1, 7))
    assert [r["phase"] for r in rows0] == ["sft"] * 2 + ["rl_short"] * 2 + ["rl_long"] * 2
    assert _comparable(rows0) == _comparable(rows1)
    assert any("heldout/acc@64" in r for r in rows0)
    assert rows0[-1]["hard_pool"] > 0  # the retrospective pool crossed the phase boundary


def test_one_checkpoint_and_one_export(two_process_run):
    ckpt = os.path.join(two_process_run, "checkpoints")
    assert sorted(os.listdir(ckpt)) == ["2", "4", "6"]  # one series, no per-process copies or tmp dirs
    # Process 0 alone writes summaries, plots and TensorBoard; process 1 only its metrics log.
    assert os.path.exists(os.path.join(two_process_run, "summary.json"))
    assert os.path.exists(os.path.join(two_process_run, "reward.png"))
    assert sorted(os.listdir(os.path.join(two_process_run, "process_1"))) == ["metrics.jsonl"]
    summary = json.loads(Path(os.path.join(two_process_run, "summary.json")).read_text())
    assert summary["steps"] == 6
    cfg, params = models.load_hf_checkpoint(os.path.join(two_process_run, "hf"))
    leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(params)]
    assert all(np.isfinite(x).all() for x in leaves) and cfg.num_layers == 4
