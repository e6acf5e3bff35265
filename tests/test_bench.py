"""The benchmarks' plumbing at toy sizes: baselines in their fastest ordinary configuration,
interleaved rounds and round-by-round ratios (the figures themselves are in docs/benchmarks.md)."""

import json
import os
import statistics

import pytest

import qwenlong_jax
from qwenlong_jax.bench import sampler, train
from qwenlong_jax.cli import bench


def test_sampler_interleaves_rounds_against_sdpa_generate_without_mask(capsys):
    res = bench.main(
        [
            "sampler",
            "--prompt_len",
            "64",
            "--new_tokens",
            "4",
            "--d_model",
            "64",
            "--layers",
            "1",
            "--vocab",
            "512",
            "--prefill_chunk",
            "32",
            "--rounds",
            "2",
            "--repeats",
            "1",
            "--threads",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert len(res["ours_s"]) == len(res["hf_s"]) == len(res["ratios"]) == len(res["cpu_ratios"]) == 2
    assert res["ratios"] == pytest.approx([h / o for h, o in zip(res["hf_s"], res["ours_s"])])
    assert "sdpa, no attention mask" in out and "median of 2 interleaved rounds" in out
    assert res["hf_kv_bytes"] == 8 * res["parts"][8]["kv_bytes"]  # G copies of the prompt cache


def test_sampler_baseline_is_sdpa(tmp_path):
    args = bench.parse_args(
        "sampler", ["--prompt_len", "16", "--new_tokens", "2", "--d_model", "64", "--layers", "1", "--vocab", "128"]
    )
    import os

    assert args.threads == len(os.sched_getaffinity(0))
    hf, _, _ = sampler.build_models(args, str(tmp_path / "m"))
    assert hf.config._attn_implementation == "sdpa"


def test_train_bench_ratios_are_taken_round_by_round():
    runs = [
        {"packed/flash": {"times": [1.0, 3.0]}, "torch": {"times": [8.0]}, "naive/xla": {"skipped": "mem"}},
        {"packed/flash": {"times": [4.0]}, "torch": {"times": [10.0]}, "naive/xla": {"skipped": "mem"}},
    ]
    assert train.round_ratio(runs, "torch", "packed/flash") == [4.0, 2.5]
    assert train.round_ratio(runs, "naive/xla", "packed/flash") is None
    merged = train.merge_rounds(runs)
    assert merged["packed/flash"]["times"] == [1.0, 3.0, 4.0] and merged["torch"]["times"] == [8.0, 10.0]
    assert merged["naive/xla"] == {"skipped": "mem"}
    assert train._ratio_text([4.0, 2.5], 9.0) == (statistics.median([4.0, 2.5]), ", rounds 2.5-4.0x")
    assert train._ratio_text(None, 9.0) == (9.0, "")
    assert bench.parse_args("train", []).rounds == 1


@pytest.mark.slow
def test_rollout_bench_same_samples_and_round_ratios(capsys, tmp_path):
    """The refill samplers vs lockstep on the default config's prompts, sampled by a run's
    exported policy (`--run`: here the base checkpoint stands in for DIR/hf): same samples token
    for token, utilization from the samplers' own step counts, per-round ratios, the run's own
    response lengths read from its metrics.jsonl."""
    (tmp_path / "hf").symlink_to(os.path.join(os.path.dirname(qwenlong_jax.__file__), "assets", "base"))
    rows = [
        {"step": 1, "phase": "sft", "loss": 1.0},
        {"step": 2, "phase": "rl_320", "response_length": 20.0, "truncated_frac": 0.0, "rollout_utilization": 0.4},
        {"step": 3, "phase": "rl_320", "response_length": 30.0, "truncated_frac": 0.5, "rollout_utilization": 0.6},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = bench.main(
        [
            "rollout",
            "--prompts",
            "3",
            "--slots",
            "2",
            "--chunk",
            "4",
            "--rounds",
            "2",
            "--run",
            str(tmp_path),
            "--profile",
        ]
    )
    assert res["same_samples"] == {"lockstep/2": True, "group_refill": True, "per-sample": True}
    assert res["prompts"] == 3 and res["G"] == 8 and res["rows"] == 16 and res["policy"] == "hf"
    assert res["run"] == pytest.approx({"steps": 2, "length_mean": 25.0, "truncated_frac": 0.25, "utilization": 0.5})
    for k in ("lockstep/2", "group_refill", "per-sample"):
        assert len(res["speedup_rounds"][k]) == 2
        assert res["speedup_median"][k] == pytest.approx(statistics.median(res["speedup_rounds"][k]))
    for u in res["utilization"].values():
        assert res["length_mean"] / res["R"] <= u <= 1
    prof = res["profile"]
    assert prof["lockstep"]["sample_groups"] > 0 and prof["group_refill"]["decode_chunk"] > 0
    assert prof["per-sample"]["decode_rows"] > 0 and prof["per-sample"]["prefill_prompt"] > 0
    assert capsys.readouterr().out.count("same samples token for token: True") == 3


def test_kernels_bench_times_ours_against_the_baseline_and_checks_outputs(capsys):
    """At toy sizes on CPU (flash in interpret mode; cuDNN exists only on a GPU, XLA is then the
    baseline): every row is timed and compared with the baseline's output."""
    res = bench.main(
        ["kernels", "--lengths", "64", "--heads", "2", "--kv_heads", "1", "--head_dim", "16"]
        + ["--decode_samples", "2", "--decode_lengths", "64", "--iters", "1"]
    )
    (row,) = res["flash"]
    assert row["base"] == "xla" and "cudnn" not in row
    assert row["ours"] > 0 and row["xla"] > 0 and row["diff"] < 0.1  # bf16 outputs and gradients
    (dec,) = res["decode"]
    assert dec["ours"] > 0 and dec["xla"] > 0 and dec["diff"] < 1e-2
    out = capsys.readouterr().out
    assert "python -m qwenlong_jax.bench kernels --lengths 64" in out and "| 64 |" in out


def test_kernels_tune_lists_configurations_that_fail_to_build(monkeypatch, capsys):
    from qwenlong_jax.bench import kernels as kbench

    # block_q=12 is no multiple of 8: refused like a Triton build failure, and listed as such.
    monkeypatch.setattr(kbench, "TUNE_BLOCKS", ((16, 16), (12, 16)))
    monkeypatch.setattr(kbench, "TUNE_TRITON", ((4, 2),))
    res = bench.main(["kernels", "--tune", "32", "--heads", "2", "--kv_heads", "1", "--head_dim", "16", "--iters", "1"])
    ok, bad = res["tune"]
    assert ok["fwd"] > 0 and ok["fwd_bwd"] > 0 and "error" not in ok
    assert "block_q=12" in bad["error"]
    assert "| 12 | 16 | 4 | 2 | block_q=12" in capsys.readouterr().out
