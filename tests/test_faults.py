"""Every user fault is one `error:` line, never a traceback, by class: bad data, bad
config, bad checkpoint, disk full, judge settings; plus the workdir lock and a resume that
cannot make progress. Most cases run the trainer's own checks in-process (they raise one of
train.user_errors(), whose message is the line train prints); one CLI subprocess per class
checks the real entry point (each start imports jax: seconds)."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

import configs.smoke
from qwenlong_jax.cli.train import user_errors
from qwenlong_jax.config import ConfigError, from_config_dict
from qwenlong_jax.data.tokenizer import load_tokenizer
from qwenlong_jax.run.checkpoint import Checkpointer, CheckpointSaveError
from qwenlong_jax.run.trainer import Trainer, TrainingError
from qwenlong_jax.run.workdir_lock import WorkdirLock, WorkdirLocked

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "qwenlong_jax", "assets", "base")


def _cli(args, workdir, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one device, as a user's laptop
    return subprocess.run(
        [sys.executable, "-m", "qwenlong_jax.train", *args, "--workdir", str(workdir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_error_line(proc, *expected: str) -> str:
    lines = [
        ln
        for ln in proc.stderr.replace("\r", "\n").splitlines()
        if ln.strip()
        and not re.match(r"[WI]\d{4} ", ln)  # absl warnings/info
        and not re.search(r"\| *\d+/\d+ \[", ln)
    ]  # tqdm progress bars
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and len(lines) == 1, proc.stderr[-3000:]
    for e in expected:
        assert e in errors[0], errors[0]
    return errors[0]


def _trainer_error(cfg_dict, workdir, **kw) -> str:
    """The one-line message train would print for this config (raised before compiling)."""
    with pytest.raises(user_errors()) as info:
        cfg = from_config_dict(cfg_dict)
        Trainer(cfg, str(workdir), quiet=True, devices=jax.devices()[:1], **kw).run()
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


# --- bad data -------------------------------------------------------------------------------


def test_bad_data_files_each_give_one_line(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n  \n\t\n")
    pq.write_table(
        pa.table({"id": pa.array([], pa.string()), "document": pa.array([], pa.string())}), tmp_path / "zero.parquet"
    )
    (tmp_path / "adir").mkdir()
    cases = {
        "empty.jsonl": "no rows",
        "blank.jsonl": "no rows",
        "zero.parquet": "no rows",
        "adir": "is a directory",
        "missing.jsonl": "does not exist",
        "nomatch*.jsonl": "matches no file",
    }
    for name, expected in cases.items():
        c = configs.smoke.get_config()
        c.data.train_files = (str(tmp_path / name),)
        msg = _trainer_error(c, tmp_path / f"run_{name.replace('*', '_')}")
        assert expected in msg and name.split("*")[0] in msg, (name, msg)


def test_bad_data_cli_one_line(tmp_path):
    (tmp_path / "blank.jsonl").write_text("\n\n")
    proc = _cli(
        ["--config", "configs/smoke.py", f"--config.data.train_files=('{tmp_path / 'blank.jsonl'}',)"], tmp_path / "run"
    )
    assert_one_error_line(proc, "blank.jsonl", "no rows")


# --- bad config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("judge.timeout_s", 0.0, "judge.timeout_s"),
        ("judge.max_concurrency", 0, "judge.max_concurrency"),
        ("rl.top_k", -1, "rl.top_k"),
        ("checkpoint_every", 0, "checkpoint_every"),
        ("keep_checkpoints", 0, "keep_checkpoints"),
    ],
)
def test_bad_config_values_are_refused_at_load(field, value, expected):
    c = configs.smoke.get_config()
    section, _, key = field.rpartition(".")
    (getattr(c, section) if section else c)[key] = value
    with pytest.raises(ConfigError, match=expected):
        from_config_dict(c)


def test_judge_key_unset_and_tokenizer_faults_before_compiling(tmp_path, monkeypatch):
    monkeypatch.delenv("QWENLONG_TEST_UNSET_KEY", raising=False)
    c = configs.smoke.get_config()
    c.judge.update(url="http://127.0.0.1:9/v1", api_key_env="QWENLONG_TEST_UNSET_KEY")
    assert "QWENLONG_TEST_UNSET_KEY is not set" in _trainer_error(c, tmp_path / "a")
    c = configs.smoke.get_config()
    c.data.tokenizer = str(tmp_path / "no_such.model")
    assert "does not exist" in _trainer_error(c, tmp_path / "b")
    (tmp_path / "junk.model").write_bytes(b"this is not a sentencepiece model")
    c.data.tokenizer = str(tmp_path / "junk.model")
    assert "not a sentencepiece model" in _trainer_error(c, tmp_path / "c")


def test_bad_config_cli_one_line(tmp_path):
    proc = _cli(["--config", "configs/smoke.py", "--config.phases.rl_lng.steps=3"], tmp_path / "run")
    assert_one_error_line(proc, "rl_lng", "rl_long")
    proc = _cli(["--config", "configs/smoke.py", "--config.checkpoint_every=0"], tmp_path / "run")
    assert_one_error_line(proc, "checkpoint_every")


# --- bad checkpoint -------------------------------------------------------------------------


def test_corrupt_safetensors_in_init_from(tmp_path):
    bad = tmp_path / "base"
    bad.mkdir()
    for name in ("config.json",):
        (bad / name).write_bytes(Path(os.path.join(BASE, name)).read_bytes())
    (bad / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage" + b"\x00" * 100)
    c = configs.smoke.get_config()
    c.model.update(size="hf", hf_path=BASE, init_from=str(bad))
    c.data.tokenizer = os.path.join(BASE, "tokenizer")
    proc = _cli(
        [
            "--config",
            "configs/smoke.py",
            "--config.model.size=hf",
            f"--config.model.hf_path={BASE}",
            f"--config.model.init_from={bad}",
            f"--config.data.tokenizer={BASE}/tokenizer",
        ],
        tmp_path / "run",
    )
    assert_one_error_line(proc, "model.safetensors", "cannot read")


# --- disk full ------------------------------------------------------------------------------


def test_disk_full_during_save_is_one_checkpoint_save_error(tmp_path, capfd):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mnt)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("needs permission to mount a 1 MiB tmpfs (root); the disk-full case is checked there")
    try:
        ck = Checkpointer(str(mnt / "checkpoints"), keep=2)
        state = {"w": jax.random.normal(jax.random.key(0), (1024, 1024))}  # 4 MiB, incompressible > 1 MiB
        capfd.readouterr()
        with pytest.raises(CheckpointSaveError) as info:
            ck.save(1, state, {"step": 1})
        msg = str(info.value)
        assert "\n" not in msg and "No space left on device" in msg and "previous checkpoint (none)" in msg
        err = capfd.readouterr().err
        assert "Traceback" not in err, err[-2000:]
        ck.close()
        # The entry point: orbax's writer threads keep failing after the save; none of it shows.
        proc = _cli(
            ["--config", "configs/smoke.py", "--config.phases.sft.steps=1", "--config.checkpoint_every=1"], mnt / "run"
        )
        assert_one_error_line(proc, "saving checkpoint 1", "No space left on device")
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


# --- workdir lock ---------------------------------------------------------------------------


def test_workdir_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "run.lock").write_text(
            json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": time.time()})
        )
        with pytest.raises(WorkdirLocked) as info:
            WorkdirLock(str(tmp_path)).acquire()
        assert f"pid {holder.pid}" in str(info.value) and socket.gethostname() in str(info.value)
        proc = _cli(["--config", "configs/smoke.py"], tmp_path)
        assert_one_error_line(proc, f"pid {holder.pid}", socket.gethostname())
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead now (as after kill -9): its lock is stale and taken over.
    lock = WorkdirLock(str(tmp_path)).acquire()
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "run.lock").exists()


# --- resume that cannot make progress -------------------------------------------------------


def _tiny_config():
    c = configs.smoke.get_config()
    c.rl.dynamic_sampling = False
    c.phases.sft.steps = 1
    c.phases.rl_short.steps = 2
    c.phases.rl_long.steps = 1
    c.data.update(synthetic_per_phase=4, eval_lengths=(64,), eval_per_length=1, eval_max_new_tokens=4)
    c.optim.max_nonfinite_in_a_row = 2
    c.export_hf = False
    return c


def test_resume_over_the_nonfinite_limit_exits_at_once(tmp_path):
    c = _tiny_config()
    c.optim.lr = 1e30  # every step after the first is non-finite
    with pytest.raises(TrainingError, match="non-finite"):
        Trainer(from_config_dict(c), str(tmp_path), quiet=True, devices=jax.devices()[:1]).run()
    # The same workdir with a sane lr (the repro): one line saying so and what to do, in seconds.
    c.optim.lr = 1e-3
    t0 = time.time()
    msg = _trainer_error(c, tmp_path)
    assert time.time() - t0 < 60
    assert "already ends with" in msg and "new --workdir" in msg and "max_nonfinite_in_a_row" in msg
    proc = _cli(
        [
            "--config",
            "configs/smoke.py",
            "--config.rl.dynamic_sampling=False",
            "--config.phases.sft.steps=1",
            "--config.phases.rl_short.steps=2",
            "--config.phases.rl_long.steps=1",
            "--config.data.synthetic_per_phase=4",
            "--config.data.eval_lengths=(64,)",
            "--config.data.eval_per_length=1",
            "--config.optim.max_nonfinite_in_a_row=2",
            "--config.export_hf=False",
        ],
        tmp_path,
        timeout=120,
    )
    assert_one_error_line(proc, "already ends with")


# --- judge / evaluate / generate ------------------------------------------------------------


def test_evaluate_reads_the_key_variable_train_reads(monkeypatch):
    import dataclasses

    from qwenlong_jax.cli.evaluate import parse_args
    from qwenlong_jax.eval.benchmarks import EvalError
    from qwenlong_jax.eval.request import make_judge

    args = parse_args(
        ["--checkpoint", BASE, "--out", "/tmp/x", "--judge_url", "http://127.0.0.1:9/v1", "--judge_model", "m"]
    )
    assert args.judge_api_key_env == "JUDGE_API_KEY"  # train's judge.api_key_env default
    monkeypatch.delenv("JUDGE_API_KEY", raising=False)
    with pytest.raises(EvalError, match=r"\$JUDGE_API_KEY is not set"):
        make_judge(args)
    monkeypatch.setenv("JUDGE_API_KEY", "k")
    assert make_judge(args).config.api_key_env == "JUDGE_API_KEY"
    args = dataclasses.replace(args, judge_api_key_env="")
    assert make_judge(args).config.api_key_env == ""  # "" = no key


def test_generate_bad_flags_and_missing_checkpoint_one_line(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for args, expected in (
        (["--checkpoint", BASE, "--max_new_tokens", "-3"], "--max_new_tokens"),
        (["--checkpoint", str(tmp_path / "nope")], "does not exist"),
        (["--checkpoint", str(tmp_path)], "no config.json"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "qwenlong_jax.generate", "--prompt", "hi", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert_one_error_line(proc, expected)


def test_evaluate_reads_inputs_from_the_store_and_refuses_a_remote_out(tmp_path, monkeypatch):
    from qwenlong_jax import paths
    from qwenlong_jax.cli.evaluate import parse_args
    from qwenlong_jax.eval.benchmarks import EvalError
    from qwenlong_jax.eval.request import localize

    monkeypatch.setenv("QWENLONG_CACHE", str(tmp_path / "cache"))
    paths.write_text("memory://i18-eval/docmath.jsonl", '{"id": 1}\n')
    args = parse_args(
        [
            "--checkpoint",
            BASE,
            "--out",
            str(tmp_path / "out"),
            "--bench_file",
            "docmath=memory://i18-eval/docmath.jsonl",
        ]
    )
    local = localize(args).bench_file[0].split("=", 1)[1]
    assert not paths.is_remote(local) and Path(local).read_text() == '{"id": 1}\n'
    args = parse_args(["--checkpoint", BASE, "--out", "memory://i18-eval/out"])
    with pytest.raises(EvalError, match="--out"):
        localize(args)
    args = parse_args(["--checkpoint", "memory://i18-eval/no_such_model", "--out", str(tmp_path / "o")])
    with pytest.raises(EvalError, match="does not exist"):
        localize(args)


def test_evaluate_rerun_after_a_failed_run_is_not_refused(tmp_path):
    """A run that failed before predicting leaves run_config.json; it does not pin the settings."""
    from qwenlong_jax.eval.benchmarks import EvalError
    from qwenlong_jax.eval.evaluation import check_run_config, drop_stale_run_config

    out = str(tmp_path / "out")
    check_run_config(out, {"max_new_tokens": 10})  # the failed run wrote this, nothing else
    drop_stale_run_config(out)
    check_run_config(out, {"max_new_tokens": 20})  # the corrected rerun is accepted
    os.makedirs(os.path.join(out, "predictions"))
    with open(os.path.join(out, "predictions", "docmath.jsonl"), "w") as f:
        f.write("{}\n")
    drop_stale_run_config(out)  # predictions exist: the settings stay pinned
    with pytest.raises(EvalError, match="different"):
        check_run_config(out, {"max_new_tokens": 30})
