"""Bad config files give one line on stderr, starting with "error:" and naming the field; no
traceback (issue 8: bad-input corpus). Each runs the real entry point in a subprocess, on the
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
    "wrong_type.py": "rl.group_size",
    "out_of_range.py": "rl.clip_high",
    "bad_choice.py": "rl.loss_agg",
    "bad_phase_range.py": "phases[rl_long]",
    "mesh_mismatch.py": "mesh",
    "indivisible_heads.py": "mesh.tensor",
    "indivisible_batch.py": "rl.micro_batch",
}


def test_every_fixture_has_an_expectation():
    assert sorted(f for f in os.listdir(FIXTURES) if f.endswith(".py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_config_gives_one_error_line(name, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "qwenlong_jax.train", "--config", os.path.join(FIXTURES, name),
         "--workdir", str(tmp_path / "run")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error:") and EXPECTED[name] in lines[0], lines[0]
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
