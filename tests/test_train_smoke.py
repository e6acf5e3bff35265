"""The smoke config end to end: SFT -> 2 RL phases -> checkpoint -> HF export, in-process."""

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

import configs.smoke
from qwenlong_jax import models
from qwenlong_jax.config import from_config_dict
from qwenlong_jax.run.metrics import read_metrics
from qwenlong_jax.run.trainer import Trainer


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("smoke"))
    cfg = from_config_dict(configs.smoke.get_config())
    summary = Trainer(cfg, workdir, quiet=True, devices=jax.devices()[:1]).run()
    return cfg, workdir, summary


def test_phases_run_in_order_with_metrics(smoke_run):
    cfg, workdir, summary = smoke_run
    rows = read_metrics(workdir)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert [r["phase"] for r in rows] == ["sft"] * 2 + ["rl_short"] * 2 + ["rl_long"] * 2
    for r in rows[:2]:
        assert np.isfinite(r["sft/nll"]) and r["sft/nll"] > 0
    rl_keys = {
        "reward_mean",
        "reward_std",
        "accuracy",
        "response_length",
        "clip_frac",
        "entropy",
        "approx_kl",
        "grad_norm",
        "filtered_groups",
        "hard_pool",
        "gen_tokens_per_s",
        "kept_groups",
        "rollout_utilization",
    }
    max_output = {p.name: p.max_output for p in cfg.phases}
    for r in rows[2:]:
        if r.get("kept_groups", 0) > 0:
            assert rl_keys <= set(r), rl_keys - set(r)
            # kept tokens / computed sample-steps: each call runs at most max_output steps
            assert r["response_length"] / max_output[r["phase"]] <= r["rollout_utilization"] <= 1
        assert 0.0 <= r["accuracy"] <= 1.0
        # A random model never writes "</think>": reward 0, plus the overlong penalty when cut off.
        assert -1.0 - 1e-6 <= r["reward_mean"] <= 1.0
    # Held-out evaluation at the end of each phase, at every eval length.
    ends = [r for r in rows if "heldout/acc@64" in r]
    assert [r["step"] for r in ends] == [2, 4, 6]
    assert summary["steps"] == 6 and len(summary["evals"]) == 3


def test_hard_pool_carries_into_the_later_phase(smoke_run):
    _, workdir, _ = smoke_run
    rows = read_metrics(workdir)
    short = [r for r in rows if r["phase"] == "rl_short"]
    long = [r for r in rows if r["phase"] == "rl_long"]
    assert all(r["hard_pool"] == 0 for r in short)  # no earlier RL phase
    # smoke sets hard_threshold=1.0: every example seen in rl_short is "hard" and carried over.
    assert all(r["hard_pool"] > 0 for r in long)
    assert all(r["hard_drawn"] >= 1 for r in long)


def test_checkpoint_export_and_plots(smoke_run):
    cfg, workdir, summary = smoke_run
    steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
    assert steps[-1] == 6
    export = os.path.join(workdir, "hf")
    mcfg, params = models.load_hf_checkpoint(export)
    assert mcfg.num_layers == 4 and os.path.exists(os.path.join(export, "tokenizer", "spm.model"))
    import transformers

    transformers.AutoModelForCausalLM.from_pretrained(export)  # loadable by transformers
    for name in ("reward.png", "heldout.png", "summary.json"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    assert os.path.isdir(os.path.join(workdir, "tb"))
    assert json.loads(Path(os.path.join(workdir, "summary.json")).read_text())["steps"] == 6


def test_rerun_of_a_finished_run_does_nothing_new(smoke_run):
    cfg, workdir, _ = smoke_run
    summary = Trainer(cfg, workdir, quiet=True, devices=jax.devices()[:1]).run()
    assert summary["steps"] == 6
    assert [r["step"] for r in read_metrics(workdir)] == list(range(1, 7))


def test_time_split_is_logged_per_step_and_summed(smoke_run, capsys):
    """Every step logs its wall time and its parts (generation, reward, update, eval); the
    summary sums them per phase (other = step - parts >= 0) and train.py prints them."""
    from qwenlong_jax.cli.train import print_summary

    _, workdir, summary = smoke_run
    rows = read_metrics(workdir)
    for r in rows:
        assert r["time/step_seconds"] > 0
        # An RL step that kept no group takes no update (rl_round.rl_step).
        assert ("time/update_seconds" in r) == (r.get("kept_groups", 1) > 0), r["step"]
        parts = ("generate", "reward") if r["phase"] != "sft" else ()
        for p in parts:
            assert r[f"time/{p}_seconds"] > 0, (r["step"], p)
        assert ("time/eval_seconds" in r) == ("heldout/acc@64" in r)
    split = summary["time_split_seconds"]
    assert list(split) == ["sft", "rl_short", "rl_long", "total"]
    steps = {ph: sum(r["time/step_seconds"] for r in rows if r["phase"] == ph) for ph in split if ph != "total"}
    for ph, t in steps.items():
        assert split[ph]["step"] == pytest.approx(t, abs=0.02)
        assert split[ph]["other"] >= -0.02
        parts = sum(split[ph][p] for p in ("generate", "reward", "update", "eval"))
        assert parts + split[ph]["other"] == pytest.approx(split[ph]["step"], abs=0.05)
    assert split["total"]["step"] == pytest.approx(sum(steps.values()), abs=0.05)
    print_summary(summary)
    assert "wall seconds by part" in capsys.readouterr().out
