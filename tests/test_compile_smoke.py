"""The compile check (python -m qwenlong_jax.compile) on the smoke config for a v5p:2x2x1 slice.

The run's own jitted steps (SFT update, GRPO old-logprob pass and update, the sampler) are
compiled by XLA:TPU for 4 compile-only chips with the mesh data=2 x tensor=2; one RL phase is
enough to cover every kind of function (the other differs only in shapes).
"""

import json

from qwenlong_jax.cli import compile as compile_cli


def test_smoke_steps_compile_for_v5p_2x2x1(tmp_path, capsys):
    out = tmp_path / "compile.json"
    rc = compile_cli.main(
        [
            "--config",
            "configs/smoke.py",
            "--topology",
            "v5p:2x2x1",
            "--phases",
            "sft,rl_short",
            "--json",
            str(out),
            "--config.mesh.data=2",
            "--config.mesh.tensor=2",
            "--config.data.eval_lengths=()",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    res = json.loads(out.read_text())
    assert res["topology"] == "v5p:2x2x1" and res["mesh"]["tensor"] == 2
    fns = {(r["phase"], r["fn"]): r for r in res["results"]}
    assert set(fns) == {("sft", "update"), ("rl_short", "old_logp"), ("rl_short", "update"), ("rl_short", "sample")}
    for r in fns.values():
        assert r["ok"] and r["fits"] and r["error"] == ""
        assert 0 < r["total_bytes"] < r["hbm_bytes"] and r["flops"] > 0
    # The optimizer state stays resident while the sampler and the logprob pass run (counted
    # in their totals); the update takes it as an argument.
    resident = fns[("rl_short", "sample")]["resident_bytes"]
    assert resident > 0 and fns[("rl_short", "old_logp")]["resident_bytes"] == resident
    assert fns[("rl_short", "update")]["resident_bytes"] == 0
    assert "rl_short  update    OK" in text
    # The roofline estimate: per function (loops multiplied out, so never below XLA's
    # loop-bodies-once FLOPs) and per RL step.
    for r in fns.values():
        est = r["est"]
        assert est["chip"] == "v5p" and est["seconds"] > 0 and est["flops"] >= r["flops"]
        assert est["bound"] in ("compute", "hbm", "ici")
    assert "rl_short: estimated RL step (roofline, not measured)" in text


def test_missing_phase_and_bad_mesh_are_one_line_errors(capsys):
    assert compile_cli.main(["--config", "configs/smoke.py", "--phases", "nope", "--config.mesh.data=-1"]) == 1
    assert capsys.readouterr().err.strip() == "error: --phases: no phase named nope"
    assert compile_cli.main(["--config", "configs/smoke.py", "--target", "v5p:2x2x1", "--config.mesh.data=3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: mesh") and "\n" not in err


def test_without_libtpu_one_line_says_how_to_install(monkeypatch, capsys):
    from qwenlong_jax.capacity import targets

    monkeypatch.setattr(targets, "libtpu_available", lambda: False)
    assert compile_cli.main(["--config", "configs/smoke.py", "--target", "v5p:2x2x1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: libtpu is not installed: pip install "jax[tpu]==0.10.2"')
    assert "\n" not in err


def test_group_refill_sampler_compiles_its_prefill_and_decode_chunk(tmp_path, capsys):
    """rl.sampler=group_refill: the compile check compiles the refill sampler's own programs (a
    prompt prefilled into its slot, a decode chunk over every slot), not the lockstep sampler,
    and the RL-step estimate counts them."""
    out = tmp_path / "compile.json"
    argv = ["--config", "configs/smoke.py", "--topology", "v5p:2x2x1", "--phases", "rl_short", "--json", str(out)]
    argv += ["--config.mesh.data=2", "--config.mesh.tensor=2", "--config.data.eval_lengths=()"]
    argv += ["--config.rl.sampler=group_refill", "--config.rl.rollout_batch=2"]
    rc = compile_cli.main(argv)
    text = capsys.readouterr().out
    assert rc == 0, text
    fns = {r["fn"]: r for r in json.loads(out.read_text())["results"]}
    assert set(fns) == {"old_logp", "update", "prefill", "decode"}
    for name in ("prefill", "decode"):
        r = fns[name]
        assert r["ok"] and r["fits"] and r["error"] == "" and r["flops"] > 0, r
        assert r["resident_bytes"] == fns["old_logp"]["resident_bytes"] > 0
    assert fns["decode"]["shape"].startswith("16 steps, slots=2 ")
    assert "prefills x" in text and "decode chunks x" in text
