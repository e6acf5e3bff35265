"""configs/ablation.py variants and the ablation report (table, statistics, claims, plot)."""

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from configs import ablation as ablation_cfg, default as default_cfg
from qwenlong_jax.cli import ablation as ablation_cli
from qwenlong_jax.config import from_config_dict
from qwenlong_jax.experiments import ablation_runs, claims, headline, stats


def _phases(variant):
    return from_config_dict(ablation_cfg.get_config(variant)).phases


def test_variants_share_the_default_phases():
    d = {p.name: p for p in from_config_dict(default_cfg.get_config()).phases}
    assert _phases("sft_only") == (d["sft"],)
    prog, retro = _phases("rl_progressive"), _phases("rl_progressive_retro")
    assert [p.name for p in prog] == [p.name for p in retro] == ["rl_320", "rl_640"]
    assert [p.retrospective for p in prog] == [True, False]  # the first has no earlier RL phase anyway
    assert retro[1].retrospective and retro[1].steps == d["rl_640"].steps
    assert prog[0] == dataclasses.replace(d["rl_320"], order=0)
    for v in ablation_cfg.VARIANTS:  # >= 96 held-out examples per length everywhere
        assert ablation_cfg.get_config(v).data.eval_per_length == ablation_cfg.EVAL_PER_LENGTH >= 96


def test_single_stage_covers_all_inputs_up_to_the_longest_limit():
    """The paper's single stage: one phase over (0, longest limit], so it sees the short
    documents the progressive variants see (no data-coverage confound)."""
    d = {p.name: p for p in from_config_dict(default_cfg.get_config()).phases}
    (single,) = _phases("rl_single_stage")
    assert single.min_input == 0
    assert (single.max_input, single.batch, single.max_output) == (
        d["rl_640"].max_input,
        d["rl_640"].batch,
        d["rl_640"].max_output,
    )
    # as many examples as the progressive phases together, with short ones among them
    c = ablation_cfg.get_config("rl_single_stage")
    assert c.data.synthetic_per_phase == 2 * default_cfg.get_config().data.synthetic_per_phase
    from qwenlong_jax.config.model import tokenizer_path
    from qwenlong_jax.data.run_data import load_run_data
    from qwenlong_jax.data.tokenizer import load_tokenizer
    from qwenlong_jax.run.curriculum import phase_records

    cfg = from_config_dict(c)
    recs = phase_records(load_run_data(cfg, load_tokenizer(tokenizer_path(cfg))).train, single)
    n = np.asarray([r.num_prompt_tokens for r in recs])
    assert len(recs) == c.data.synthetic_per_phase
    assert (n <= d["rl_320"].min_input).mean() > 0.1 and (n > d["rl_640"].min_input).mean() > 0.3


def test_single_stage_gets_the_same_rl_token_budget_at_the_measured_input_mix():
    """Budget: prompt tokens at each phase's MEASURED mean (re-measured here from the configs the
    runner trains) + G responses at the output cap; the single stage within half a step of it."""
    G = from_config_dict(default_cfg.get_config()).rl.group_size
    prog_cfg = ablation_cfg.get_config("rl_progressive")
    prog_mean = ablation_cfg.mean_prompt_tokens(prog_cfg)
    budget = sum(ablation_cfg.rl_tokens(prog_cfg.phases[n], G, m) for n, m in prog_mean.items())
    single_cfg = ablation_cfg.get_config("rl_single_stage")
    (single_mean,) = ablation_cfg.mean_prompt_tokens(single_cfg).values()
    single = single_cfg.phases.rl_640
    per_step = ablation_cfg.rl_tokens(single, G, single_mean) / single.steps
    assert abs(ablation_cfg.rl_tokens(single, G, single_mean) - budget) <= per_step / 2
    # the measured means are the data's, not the range midpoints
    assert prog_mean["rl_320"] != (160 + 320) / 2 and single_mean != 320
    assert 160 < prog_mean["rl_320"] <= 320 < prog_mean["rl_640"] <= 640 and single_mean < prog_mean["rl_640"]
    plan = ablation_cfg.single_stage_plan()
    assert plan["steps"] == single.steps and plan["budget_tokens"] == pytest.approx(budget)


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant 'rl_magic'"):
        ablation_cfg.get_config("rl_magic")


# ----------------------------------------------------------------------------- verdicts
def test_binomial_variance_is_agresti_coull_adjusted():
    assert stats.binomial_var(0.5, 96) == pytest.approx(0.25 / 100)
    assert stats.binomial_var(0.0, 48) == pytest.approx((2 / 52) * (50 / 52) / 52)  # 0 of 48: not 0
    assert stats.binomial_var(1.0, 48) == pytest.approx(stats.binomial_var(0.0, 48))
    assert stats.binomial_var(0.3, 10_000) == pytest.approx(0.3 * 0.7 / 10_000, rel=1e-3)  # ~ m(1-m)/N


def test_verdict_held_not_shown_reversed():
    """Constructed arms: SE² = sd²/n + B(m, N) per arm; HELD iff gap > 2 SE."""
    N = 100
    a = stats.arm([0.50, 0.55, 0.60], N)  # mean .55, sd .05
    assert a.mean == pytest.approx(0.55) and a.sd == pytest.approx(0.05)
    p = (55 + 2) / 104
    assert a.se2 == pytest.approx(0.05**2 / 3 + p * (1 - p) / 104)
    b = stats.arm([0.30, 0.30, 0.30], N)  # sd 0
    se = math.sqrt(a.se2 + b.se2)
    v = stats.verdict(a, b)
    assert v["verdict"] == "HELD" and v["gap"] == pytest.approx(0.25) and v["se"] == pytest.approx(se)
    assert v["seed_term_known"] and "+25.0 pts > 2 SE" in v["why"]
    assert stats.verdict(b, a)["verdict"] == "REVERSED"
    c = stats.arm([0.45, 0.55, 0.65], N)  # mean .55 like a: no gap
    assert stats.verdict(a, c)["verdict"] == "NOT SHOWN"
    # a gap just inside / just outside 2 SE
    lo = stats.arm([0.40] * 3, N)
    hi_in = 0.40 + 1.9 * math.sqrt(2 * 0.4 * 0.6 / N)
    assert stats.verdict(stats.arm([hi_in] * 3, N), lo)["verdict"] == "NOT SHOWN"
    hi_out = 0.40 + 2.2 * math.sqrt(2 * 0.45 * 0.55 / N)
    assert stats.verdict(stats.arm([hi_out] * 3, N), lo)["verdict"] == "HELD"
    # a large seed spread hides a gap that the binomial error alone would call significant
    wide = stats.arm([0.2, 0.9, 0.5], 10_000)
    narrow = stats.arm([0.3, 0.3, 0.3], 10_000)
    assert stats.verdict(wide, narrow)["verdict"] == "NOT SHOWN"
    assert stats.verdict(stats.arm([0.5] * 3, 10_000), narrow)["verdict"] == "HELD"


def test_verdict_with_one_seed_uses_the_binomial_error_and_says_so():
    """The default run's one-seed headline, 5 of 48 after RL vs 0 of 48 after SFT (+10.4
    points): within 2 SE (5.4 points), so NOT SHOWN; the same rates on 96 examples would hold."""
    rl, sft = stats.arm([5 / 48], 48), stats.arm([0.0], 48)
    assert rl.sd is None and rl.se2 == pytest.approx((7 / 52) * (45 / 52) / 52)
    assert sft.se2 == pytest.approx((2 / 52) * (50 / 52) / 52)
    v = stats.verdict(rl, sft)
    assert v["se"] == pytest.approx(math.sqrt(rl.se2 + sft.se2))
    assert v["verdict"] == "NOT SHOWN" and not v["seed_term_known"]
    assert "binomial only for the better and worse arms" in v["why"]
    assert stats.verdict(stats.arm([10 / 96], 96), stats.arm([0.0], 96))["verdict"] == "HELD"
    v = stats.verdict(stats.arm([0.1, 0.12], 96), stats.arm([0.0], 96))
    assert "binomial only for the worse arm" in v["why"]
    v = stats.verdict(stats.arm([0.146], 48), stats.arm([0.125], 48))  # the one-seed ablation's 512-token pair
    assert v["verdict"] == "NOT SHOWN"


def test_average_arm_binomial_term():
    runs = [{128: 0.5, 512: 0.1}, {128: 0.7, 512: 0.3}]
    a = stats.average_arm(runs, 50)
    assert a.mean == pytest.approx(0.4) and a.sd == pytest.approx(np.std([0.3, 0.5], ddof=1))
    assert a.binom_var == pytest.approx((stats.binomial_var(0.6, 50) + stats.binomial_var(0.2, 50)) / 4)


RESULTS = {
    "sft_only": [{128: 0.5, 512: 0.1}],
    "rl_single_stage": [{128: 0.6, 512: 0.3}, {128: 0.4, 512: 0.3}],
    "rl_progressive": [{128: 0.7, 512: 0.3}, {128: 0.7, 512: 0.5}],
    "rl_progressive_retro": [{128: 0.7, 512: 0.4}, {128: 0.7, 512: 0.4}],
}


def test_aggregate_table_and_claims(tmp_path):
    agg = stats.aggregate(RESULTS, 1000)
    a = agg["rl_single_stage"]["lengths"][128]
    assert (a.mean, a.sd, a.seeds) == pytest.approx((0.5, math.sqrt(0.02), 2))
    assert agg["rl_progressive"]["avg"].mean == pytest.approx(0.55)  # per-seed averages 0.5, 0.6
    assert agg["rl_progressive"]["avg"].sd == pytest.approx(math.sqrt(0.005))
    table = claims.markdown_table(agg)
    assert table.splitlines()[0] == "| variant | seeds | 128 tok | 512 tok | avg |"
    assert "| sft_only | 1 | 50.0 | 10.0 | 30.0 |" in table
    assert "| rl_progressive | 2 | 70.0 ± 0.0 | 40.0 ± 14.1 | 55.0 ± 7.1 |" in table
    cl = {c["better"] + ">" + c["worse"]: c for c in claims.claims(agg)}
    # 55 vs 30 (sft one seed: binomial only on its side): gap 25, SE ~5.1
    assert cl["rl_progressive_retro>sft_only"]["verdict"] == "HELD"
    assert not cl["rl_progressive_retro>sft_only"]["seed_term_known"]
    # 55 +- 7.1 vs 40 +- 0 over 2 seeds: gap 15, SE ~5.2 -> held; at 128 tok 70 vs 50 +- 14
    p = cl["rl_progressive>rl_single_stage"]
    assert p["verdict"] == "HELD" and p["by_length"][128]["verdict"] == "NOT SHOWN"
    assert cl["rl_progressive_retro>rl_progressive"]["verdict"] == "NOT SHOWN"  # 55 vs 55
    md = claims.claims_markdown(claims.claims(agg))
    assert "| rl_progressive > rl_single_stage | avg | +15.0 |" in md
    path = tmp_path / "a.png"
    claims.plot(agg, str(path), "t", raw=RESULTS)
    assert path.stat().st_size > 1000


def test_headline_report_from_default_run_summaries(tmp_path):
    """SFT = the sweep after the SFT phase, RL = the last one, per seed; longest length first."""

    def summary(sft512, rl512):
        return {
            "minutes": 15.0,
            "evals": [
                {"step": 40, "phase": "sft", "heldout/acc@128": 0.75, "heldout/acc@512": sft512},
                {"step": 64, "phase": "rl_320", "heldout/acc@128": 0.8, "heldout/acc@512": 0.05},
                {"step": 88, "phase": "rl_640", "heldout/acc@128": 0.85, "heldout/acc@512": rl512},
            ],
        }

    h = headline.headline_report([summary(0.0, 0.10), summary(0.01, 0.14), summary(0.0, 0.12)], 96)
    assert h["lengths"] == [512, 128]
    top = h["rows"][512]
    assert top["rl"]["mean"] == pytest.approx(0.12) and top["sft"]["mean"] == pytest.approx(0.01 / 3)
    assert top["gap"] == pytest.approx(0.12 - 0.01 / 3) and top["verdict"] == "HELD"
    md = headline.headline_markdown(h)
    assert md.splitlines()[2].startswith("| 512 tok | 0.3 ± 0.6 | 12.0 ± 2.0 | +11.7 |")
    path = tmp_path / "h.png"
    headline.headline_plot(h, str(path))
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="no evaluation after phase 'sft'"):
        headline.headline_report([{"evals": [{"phase": "rl_640", "heldout/acc@512": 0.1}]}], 96)


def test_runner_rejects_unknown_variants():
    with pytest.raises(SystemExit, match="--variants"):
        ablation_cli.main(["--out", "/nonexistent", "--variants", "rl_magic"])


def _fake_runs(calls):
    """run_config stand-in: records each run, writes a retro run's metrics rows, and returns a
    summary whose accuracy depends on the seed."""
    import json
    import os

    def run(c, workdir, quiet):
        calls.append((os.path.relpath(workdir), c.seed, c.model.init_from, tuple(c.phases)))
        os.makedirs(workdir, exist_ok=True)
        if "rl_progressive_retro" in workdir:
            rows = [
                {"phase": "rl_320", "hard_pool": 0, "hard_drawn": 0, "hard_trained": 0, "kept_groups": 3},
                {"phase": "rl_640", "hard_pool": 14, "hard_drawn": 6, "hard_trained": 2, "kept_groups": 4},
                {"phase": "rl_640", "hard_pool": 14, "hard_drawn": 6, "hard_trained": 0, "kept_groups": 2},
            ]
            with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
                f.write("".join(json.dumps(r) + "\n" for r in rows))
        return {"evals": [{"phase": "last", "heldout/acc@64": 0.5 + 0.1 * c.seed, "heldout/acc@128": 0.2}]}

    return run


def test_runner_trains_sft_per_seed_and_reports_hard_groups(tmp_path, monkeypatch):
    """sft_only once per seed, each RL seed from its own seed's SFT export; the retro variant's
    hard prompts drawn and hard groups trained per step, per seed, in results and table."""
    import os

    calls = []
    monkeypatch.setattr(ablation_runs, "run_config", _fake_runs(calls))
    monkeypatch.chdir(tmp_path)
    report = ablation_cli.main(["--out", "abl", "--seeds", "0,1", "--tiny", "--quiet"])
    sft = [c for c in calls if c[0].startswith("abl/sft_only")]
    assert [(c[0], c[1], c[3]) for c in sft] == [
        ("abl/sft_only/seed0", 0, ("sft",)),
        ("abl/sft_only/seed1", 1, ("sft",)),
    ]
    for wd, seed, init, _ in calls:
        if not wd.startswith("abl/sft_only"):
            assert init == os.path.join("abl", "sft_only", f"seed{seed}", "hf"), (wd, init)
    assert report["raw"]["sft_only"] == [{64: 0.5, 128: 0.2}, {64: 0.6, 128: 0.2}]
    assert report["aggregate"]["sft_only"]["avg"]["sd"] is not None  # a seed term on the SFT side
    h = report["hard_groups"]
    assert set(h) == {"seed0", "seed1"}
    assert h["seed0"] == {
        "steps": 2,
        "hard_pool": 14,
        "hard_drawn_per_step": 6.0,
        "hard_trained_per_step": 1.0,
        "kept_per_step": 3.0,
        "hard_share_of_trained": pytest.approx(1 / 3),
        "steps_without_hard_trained": 1,
    }
    table = (tmp_path / "abl" / "table.md").read_text()
    assert "| seed0 | 2 | 14 | 6.00 | 1.00 | 3.00 | 33% |" in table


def test_hard_group_stats_without_a_pool():
    assert claims.hard_group_stats([{"hard_pool": 0, "hard_trained": 0, "kept_groups": 8}]) == {"steps": 0}


@pytest.mark.slow
def test_tiny_ablation_end_to_end(tmp_path):
    """The whole command at a few steps per run (its own process: one CPU device, as users run
    it): SFT once, 3 RL variants from its export, 2 seeds, the report files; a second
    invocation resumes and reruns nothing."""
    import json
    import os
    import subprocess
    import sys

    out = str(tmp_path / "abl")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "-m", "qwenlong_jax.ablation", "--out", out, "--seeds", "0,1", "--tiny", "--quiet"]

    def run():
        p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1500)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
        return p.stdout, json.loads(Path(os.path.join(out, "results.json")).read_text())

    stdout, report = run()
    assert set(report["raw"]) == {"sft_only", *ablation_runs.RL_VARIANTS}
    assert [len(v) for v in report["raw"].values()] == [2, 2, 2, 2]  # sft_only per seed too
    assert set(report["hard_groups"]) == {"seed0", "seed1"}
    assert all(h["steps"] == 1 and h["hard_drawn_per_step"] > 0 for h in report["hard_groups"].values())
    assert "hard trained / step" in stdout
    assert "| variant | seeds |" in stdout and "SE" in stdout
    assert sum(stdout.count(v) for v in ("HELD", "NOT SHOWN", "REVERSED")) >= 3
    for name in ("results.json", "table.md", "ablation.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    summary = json.loads(Path(os.path.join(out, "rl_progressive", "seed1", "summary.json")).read_text())
    assert summary["steps"] == 2 and [e["phase"] for e in summary["evals"]] == ["rl_320", "rl_640"]
    single = json.loads(Path(os.path.join(out, "rl_single_stage", "seed0", "summary.json")).read_text())
    assert [e["phase"] for e in single["evals"]] == ["rl_640"]
    _, again = run()
    assert again["raw"] == report["raw"]
    assert again["minutes_this_invocation"] < report["minutes_this_invocation"]


@pytest.mark.slow
def test_tiny_headline_end_to_end(tmp_path):
    """--headline at a few steps per run: the default config once per seed (SFT + both RL
    phases in one run), RL vs the same run's post-SFT sweep, mean ± sd and a verdict."""
    import json
    import os
    import subprocess
    import sys

    out = str(tmp_path / "head")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [
        sys.executable,
        "-m",
        "qwenlong_jax.ablation",
        "--headline",
        "--out",
        out,
        "--seeds",
        "0,1",
        "--tiny",
        "--quiet",
    ]
    p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    h = json.loads(Path(os.path.join(out, "headline.json")).read_text())
    assert h["seeds"] == 2 and h["lengths"] == [128, 64] and h["seed_list"] == [0, 1]
    assert h["rows"]["128"]["verdict"] in ("HELD", "NOT SHOWN", "REVERSED")
    assert "RL after SFT beats SFT alone at 128 tokens" in p.stdout and "SE" in p.stdout
    for s in (0, 1):
        summary = json.loads(Path(os.path.join(out, "default", f"seed{s}", "summary.json")).read_text())
        assert [e["phase"] for e in summary["evals"]] == ["sft", "rl_320", "rl_640"]
    for name in ("headline.md", "headline.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
