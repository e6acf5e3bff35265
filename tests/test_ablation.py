"""configs/ablation.py variants and the ablation report (table, claims, plot)."""
import pytest

from configs import ablation as ablation_cfg
from configs import default as default_cfg
from qwenlong_jax import ablation
from qwenlong_jax.config import from_config_dict


def _phases(variant):
    return from_config_dict(ablation_cfg.get_config(variant)).phases


def test_variants_share_the_default_phases():
    d = {p.name: p for p in from_config_dict(default_cfg.get_config()).phases}
    assert _phases("sft_only") == (d["sft"],)
    prog, retro = _phases("rl_progressive"), _phases("rl_progressive_retro")
    assert [p.name for p in prog] == [p.name for p in retro] == ["rl_320", "rl_640"]
    assert [p.retrospective for p in prog] == [True, False]  # the first has no earlier RL phase anyway
    assert retro[1].retrospective and retro[1].steps == d["rl_640"].steps
    (single,) = _phases("rl_single_stage")
    assert (single.min_input, single.max_input, single.batch) == (d["rl_640"].min_input, d["rl_640"].max_input,
                                                                  d["rl_640"].batch)


def test_single_stage_gets_the_same_rl_token_budget():
    G = from_config_dict(default_cfg.get_config()).rl.group_size
    budget = sum(ablation_cfg.rl_tokens(p, G) for p in _phases("rl_progressive"))
    (single,) = _phases("rl_single_stage")
    per_step = ablation_cfg.rl_tokens(single, G) / single.steps
    assert abs(ablation_cfg.rl_tokens(single, G) - budget) <= per_step / 2  # within half a step
    assert single.steps < sum(p.steps for p in _phases("rl_progressive"))  # longer prompts, fewer steps


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant 'rl_magic'"):
        ablation_cfg.get_config("rl_magic")


RESULTS = {
    "sft_only": [{128: 0.5, 512: 0.1}],
    "rl_single_stage": [{128: 0.6, 512: 0.3}, {128: 0.4, 512: 0.3}],
    "rl_progressive": [{128: 0.7, 512: 0.3}, {128: 0.7, 512: 0.5}],
    "rl_progressive_retro": [{128: 0.7, 512: 0.4}, {128: 0.7, 512: 0.4}],
}


def test_aggregate_table_and_claims(tmp_path):
    agg = ablation.aggregate(RESULTS)
    assert agg["rl_single_stage"]["lengths"][128] == pytest.approx((0.5, 0.1))
    assert agg["rl_progressive"]["avg"] == pytest.approx((0.55, 0.05))  # per-seed averages 0.5, 0.6
    table = ablation.markdown_table(agg)
    assert table.splitlines()[0] == "| variant | seeds | 128 tok | 512 tok | avg |"
    assert "| sft_only | 1 | 50.0 | 10.0 | 30.0 |" in table
    assert "| rl_progressive | 2 | 70.0 ± 0.0 | 40.0 ± 10.0 | 55.0 ± 5.0 |" in table
    held = {c["better"] + ">" + c["worse"]: c["held"] for c in ablation.claims(agg)}
    assert held == {"rl_progressive_retro>sft_only": True,  # 55 vs 30
                    "rl_progressive>rl_single_stage": True,  # 55 +- 5 vs 40 +- 0
                    "rl_progressive_retro>rl_progressive": False}  # 55 vs 55: not better
    path = tmp_path / "a.png"
    ablation.plot(agg, str(path), "t")
    assert path.stat().st_size > 1000


def test_runner_rejects_unknown_variants():
    with pytest.raises(SystemExit, match="--variants"):
        ablation.main(["--out", "/nonexistent", "--variants", "rl_magic"])


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
        return p.stdout, json.load(open(os.path.join(out, "results.json")))

    stdout, report = run()
    assert set(report["raw"]) == {"sft_only", *ablation.RL_VARIANTS}
    assert [len(v) for v in report["raw"].values()] == [1, 2, 2, 2]
    assert "| variant | seeds |" in stdout and "HELD" in stdout
    for name in ("results.json", "table.md", "ablation.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    summary = json.load(open(os.path.join(out, "rl_progressive", "seed1", "summary.json")))
    assert summary["steps"] == 2 and [e["phase"] for e in summary["evals"]] == ["rl_320", "rl_640"]
    _, again = run()
    assert again["raw"] == report["raw"]
    assert again["minutes_this_invocation"] < report["minutes_this_invocation"]
