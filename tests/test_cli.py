"""Every command the README and docs/ name: `python -m qwenlong_jax.X --help` (and --helpfull)
prints its usage with its main flags, and a bad flag or value is one `error:` line naming it."""

import glob
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# command (as typed after `python -m qwenlong_jax.`) -> flags its usage must name
MAIN_FLAGS = {
    "train": ("--config", "--workdir", "--stop_grace_s"),
    "plan": ("--config", "--devices", "--hbm_gib", "--backend"),
    "compile": ("--config", "--target", "--topology", "--phases", "--functions", "--json"),
    "evaluate": (
        "--checkpoint",
        "--out",
        "--benchmarks",
        "--data_dir",
        "--bench_file",
        "--sweep",
        "--lengths",
        "--judge_url",
    ),
    "generate": ("--checkpoint", "--prompt", "--chat", "--max_new_tokens", "--temperature", "--num_samples"),
    "ablation": ("--out", "--seeds", "--variants", "--headline", "--tiny"),
    "pretrain": ("--out", "--minutes", "--steps", "--init_from", "--copy_fraction"),
    "data.make_synthetic": ("--out", "--num", "--doc_tokens", "--families", "--tokenizer"),
    "data.train_tokenizer": ("--out", "--vocab_size", "--seed"),
    "bench": ("attention", "rollout", "sampler", "train"),
    "bench attention": ("--lengths", "--heads", "--dtype"),
    "bench rollout": ("--config", "--prompts", "--slots", "--chunk", "--prompt-slots", "--rounds"),
    "bench sampler": ("--prompt_len", "--new_tokens", "--num_samples", "--rounds", "--threads"),
    "bench train": ("--prompt_len", "--group", "--resp_len", "--attention", "--variants", "--rounds"),
}


def _named_commands() -> set[str]:
    """Every `python -m qwenlong_jax.X [benchmark]` the README and docs/ show."""
    names = set()
    for path in [os.path.join(REPO, "README.md"), *glob.glob(os.path.join(REPO, "docs", "*.md"))]:
        text = Path(path).read_text(encoding="utf-8")
        for m in re.finditer(r"python -m qwenlong_jax\.(\w+(?:\.\w+)*)(?: (attention|rollout|sampler|train)\b)?", text):
            names.add(m.group(1) + (f" {m.group(2)}" if m.group(2) else ""))
    return names


def _run(command: str, *args: str) -> subprocess.CompletedProcess:
    module, *rest = command.split()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    return subprocess.run(
        [sys.executable, "-m", f"qwenlong_jax.{module}", *rest, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_named_command_is_checked():
    named = _named_commands()
    assert {"train", "plan", "compile", "evaluate", "generate", "ablation", "pretrain"} <= named, named
    assert named <= set(MAIN_FLAGS), f"commands the docs name without a check here: {named - set(MAIN_FLAGS)}"


@pytest.mark.parametrize("command", sorted(MAIN_FLAGS))
def test_help_prints_the_usage_with_the_main_flags(command):
    proc = _run(command, "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    usage = proc.stdout
    assert f"python -m qwenlong_jax.{command.split()[0]}" in usage, usage[:2000]
    for flag in MAIN_FLAGS[command]:  # a boolean flag reads --[no]name
        assert flag in usage or flag.replace("--", "--[no]", 1) in usage, f"{command} --help omits {flag}:\n{usage}"
    assert not proc.stderr.strip(), proc.stderr[-3000:]


@pytest.mark.parametrize("command", ["plan", "evaluate", "bench sampler"])
def test_helpfull_prints_every_flag(command):
    """--helpfull: every flag, and with a config the fields its overrides can set."""
    proc = _run(command, "--helpfull", *(["--config", "configs/smoke.py"] if command == "plan" else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for flag in (*MAIN_FLAGS[command], "--[no]helpfull"):
        assert flag in proc.stdout or flag.replace("--", "--[no]", 1) in proc.stdout, (
            f"{command} --helpfull does not name {flag}:\n{proc.stdout}"
        )
    if command == "plan":
        assert "--config.rl.group_size=" in proc.stdout and "--config.phases.rl_long.max_output=" in proc.stdout


def _one_error_line(main, argv, capsys) -> str:
    """main(argv) in-process: exits (or returns 1) with one `error:` line on stderr."""
    try:
        rc = main(argv)
        err = capsys.readouterr().err
    except SystemExit as e:
        rc, err = e.code, capsys.readouterr().err + (e.code if isinstance(e.code, str) else "")
    assert rc not in (0, None), err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _mains():
    from qwenlong_jax.cli import (
        ablation,
        bench,
        compile,
        evaluate,
        generate,
        make_synthetic,
        plan,
        pretrain,
        train,
        train_tokenizer,
    )

    return {
        "train": train.main,
        "plan": plan.main,
        "compile": compile.main,
        "evaluate": evaluate.main,
        "generate": generate.main,
        "ablation": ablation.main,
        "pretrain": pretrain.main,
        "data.make_synthetic": make_synthetic.main,
        "data.train_tokenizer": train_tokenizer.main,
        "bench": bench.main,
    }


# A flag every command needs given, so that the bad one is the only fault.
GOOD = {
    "plan": ["--config", "configs/smoke.py"],
    "compile": ["--config", "configs/smoke.py"],
    "evaluate": ["--checkpoint", "c", "--out", "o"],
    "generate": ["--checkpoint", "c", "--prompt", "p"],
    "data.make_synthetic": ["--out", "o", "--num", "1"],
    "data.train_tokenizer": ["--out", "o"],
}
BAD_VALUE = {
    "train": "--stop_grace_s=soon",
    "plan": "--devices=many",
    "compile": "--json",
    "evaluate": "--lengths=1024,long",
    "generate": "--max_new_tokens=lots",
    "ablation": "--seeds=0,one",
    "pretrain": "--steps=3.5",
    "data.make_synthetic": "--seed=x",
    "data.train_tokenizer": "--vocab_size=big",
}


@pytest.mark.parametrize("command", sorted(BAD_VALUE))
def test_an_unknown_flag_and_a_bad_value_are_one_error_line_naming_the_flag(command, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    main = _mains()[command]
    line = _one_error_line(main, [*GOOD.get(command, []), "--no_such_flag=1"], capsys)
    assert "no_such_flag" in line, line
    bad = BAD_VALUE[command]
    line = _one_error_line(main, [*GOOD.get(command, []), bad], capsys)
    assert bad.split("=")[0] in line, line


def test_bench_names_its_benchmarks_in_one_error_line(capsys):
    main = _mains()["bench"]
    line = _one_error_line(main, ["nope"], capsys)
    assert "attention, kernels, rollout, sampler, train" in line, line
    line = _one_error_line(main, ["sampler", "--rounds=two"], capsys)
    assert "--rounds" in line, line


def test_a_missing_required_flag_is_named(capsys):
    line = _one_error_line(_mains()["evaluate"], ["--out", "o"], capsys)
    assert line == "error: --checkpoint is required", line
    line = _one_error_line(_mains()["plan"], [], capsys)
    assert "--config is required" in line, line
