"""Bad config files give one line on stderr, starting with "error:" and naming the field; no
traceback (the bad-input corpus). Each runs the real entry point in a subprocess, on the
8 fake CPU devices conftest sets up (XLA_FLAGS is inherited), so mesh errors are realistic."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "bad_configs")

# fixture file -> text the error line must contain (the field to change)
EXPECTED = {
    "unknown_key.py": "optim.learning_rate",
    "wrong_type.py": "group_size",  # ConfigDict itself refuses it while the file runs
    "out_of_range.py": "rl.clip_high",
    "bad_choice.py": "rl.loss_agg",
    "bad_phase_range.py": "phases[rl_long]",
    "mesh_mismatch.py": "mesh",
    "indivisible_heads.py": "mesh.tensor",
    "indivisible_batch.py": "rl.micro_batch",
}


# command lines -> text the error line must contain
CLI_CASES = {
    "override_wrong_type": (["--config", "configs/smoke.py", "--config.rl.group_size=abc"], "rl.group_size"),
    "override_unknown_field": (["--config", "configs/smoke.py", "--config.rl.grup_size=4"], "grup_size"),
    "override_out_of_range": (["--config", "configs/smoke.py", "--config.optim.lr=-1.0"], "optim.lr"),
    "missing_config_file": (["--config", "configs/no_such_config.py"], "no_such_config.py"),
}


def _run(args, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "qwenlong_jax.train", *args, "--workdir", str(tmp_path / "run")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_one_error_line(proc, expected: str) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error:") and expected in lines[0], lines[0]


def test_every_fixture_has_an_expectation():
    assert sorted(f for f in os.listdir(FIXTURES) if f.endswith(".py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_config_file_gives_one_error_line(name, tmp_path):
    proc = _run(["--config", os.path.join(FIXTURES, name)], tmp_path)
    _assert_one_error_line(proc, EXPECTED[name])
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_bad_command_line_gives_one_error_line(case, tmp_path):
    args, expected = CLI_CASES[case]
    _assert_one_error_line(_run(args, tmp_path), expected)
