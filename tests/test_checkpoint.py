"""Checkpointer faults: a torn or corrupt newest checkpoint falls back to the previous one with
a warning; a save that fails part-way (disk full) raises and leaves the previous one intact."""

import errno
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from qwenlong_jax.run.checkpoint import Checkpointer, CheckpointSaveError, abstract_like


def _state(v: float) -> dict:
    dev = jax.devices()[0]
    return {
        "params": {
            "w": jax.device_put(jnp.full((4, 8), v, jnp.float32), dev),
            "b": jax.device_put(jnp.arange(8, dtype=jnp.int32) + int(v), dev),
        },
        "step": jax.device_put(jnp.asarray(int(v), jnp.int32), dev),
    }


def _saved(directory: str, steps=(1, 2)) -> dict:
    ck = Checkpointer(directory, keep=3)
    for s in steps:
        ck.save(s, _state(float(s)), {"step": s, "phase_data": {"draws": s}})
    ck.close()
    return abstract_like(_state(0.0))


def _check_restored(out, step: int) -> None:
    got_step, state, meta = out
    assert got_step == step and meta == {"step": step, "phase_data": {"draws": step}}
    np.testing.assert_array_equal(np.asarray(state["params"]["w"]), np.full((4, 8), float(step), np.float32))
    np.testing.assert_array_equal(np.asarray(state["params"]["b"]), np.arange(8) + step)


def _files(root: str) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]


def _garbage(step_dir):
    for f in _files(os.path.join(step_dir, "state")):
        with open(f, "r+b") as fh:
            n = max(os.path.getsize(f), 16)
            fh.seek(0)
            fh.write(np.random.default_rng(0).bytes(n))


def _truncated(step_dir):
    for f in _files(os.path.join(step_dir, "state")):
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)


def _state_missing(step_dir):
    shutil.rmtree(os.path.join(step_dir, "state"))


def _meta_corrupt(step_dir):
    for f in _files(os.path.join(step_dir, "meta")):
        if not f.endswith("commit_success.txt"):
            with open(f, "w") as fh:
                fh.write('{"step": ')


@pytest.mark.parametrize(
    "corrupt", [_garbage, _truncated, _state_missing, _meta_corrupt], ids=lambda f: f.__name__.strip("_")
)
def test_corrupt_latest_falls_back_to_previous_with_warning(tmp_path, corrupt, capsys, caplog):
    abstract = _saved(str(tmp_path))
    corrupt(str(tmp_path / "2"))
    ck = Checkpointer(str(tmp_path))
    assert ck.steps() == [1, 2]
    _check_restored(ck.restore_latest(abstract), 1)
    out = capsys.readouterr().out
    assert "warning: checkpoint 2" in out and "using the previous one" in out
    assert any("checkpoint 2" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    ck.close()


def test_intact_latest_is_used(tmp_path, capsys):
    abstract = _saved(str(tmp_path))
    ck = Checkpointer(str(tmp_path))
    _check_restored(ck.restore_latest(abstract), 2)
    assert "warning" not in capsys.readouterr().out
    ck.close()


def test_disk_full_mid_save_raises_and_keeps_the_previous(tmp_path, monkeypatch):
    abstract = _saved(str(tmp_path), steps=(1,))
    calls = []

    def no_space(self, x, directory):  # the arrays are written; the JSON meta hits a full disk
        calls.append(directory)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", no_space)
    ck = Checkpointer(str(tmp_path))
    with pytest.raises(CheckpointSaveError, match="No space left on device") as e:
        ck.save(2, _state(2.0), {"step": 2, "phase_data": {"draws": 2}})
    assert calls, "the fault was never injected: the test did not exercise a failing save"
    assert "checkpoint 2" in str(e.value) and "step 1" in str(e.value)
    ck.close()
    monkeypatch.undo()

    ck = Checkpointer(str(tmp_path))  # a fresh start (the run was stopped by the error)
    assert ck.steps() == [1]
    _check_restored(ck.restore_latest(abstract), 1)
    ck.save(2, _state(2.0), {"step": 2, "phase_data": {"draws": 2}})  # space again: saving works
    _check_restored(ck.restore_latest(abstract), 2)
    ck.close()
