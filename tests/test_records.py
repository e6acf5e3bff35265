"""Records that survive: metrics.jsonl is strict JSON whatever the values, a
checkpoint found corrupt is rewritten when its step is saved again, TensorBoard is flushed."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwenlong_jax.run.checkpoint import Checkpointer
from qwenlong_jax.run.metrics import MetricsWriter, read_metrics
from tests.tb_events import scalar_steps


def strict_loads(line: str):
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_non_finite_metrics_are_null_and_flagged(tmp_path):
    w = MetricsWriter(str(tmp_path))
    w.write(1, "rl", {"loss": float("nan"), "grad_norm": np.float32("inf"), "reward_mean": 0.5})
    w.write(2, "rl", {"loss": 1.0, "grad_norm": 2.0, "reward_mean": 0.25})
    w.flush()  # what the trainer does at each checkpoint
    rows = [strict_loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss"] is None and rows[0]["grad_norm"] is None and rows[0]["reward_mean"] == 0.5
    assert rows[0]["nonfinite"] == ["grad_norm", "loss"]
    assert "nonfinite" not in rows[1] and rows[1]["loss"] == 1.0
    # Flushed: the steps are in the event file before close (a kill -9 now would keep them).
    assert scalar_steps(str(tmp_path / "tb"), "reward_mean") == [1, 2]
    assert scalar_steps(str(tmp_path / "tb"), "loss") == [2]  # non-finite values are not plotted
    w.close()
    # Resume at step 1 drops the later rows and keeps the file strict.
    MetricsWriter(str(tmp_path), resume_step=1).close()
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1]


def _state(v: float):
    return {"w": jnp.full((4, 4), v, jnp.float32), "step": jnp.asarray(int(v), jnp.int32)}


def _abstract(state):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def test_corrupt_checkpoint_is_replaced_when_its_step_is_saved_again(tmp_path):
    ck = Checkpointer(str(tmp_path), keep=3)
    ck.save(1, _state(1.0), {"step": 1})
    ck.save(2, _state(2.0), {"step": 2})
    ck.close()
    # Corrupt every file of step 2's state (a torn copy, a bad disk).
    for root, _, files in os.walk(tmp_path / "2" / "state"):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"\x00garbage")
    ck = Checkpointer(str(tmp_path), keep=3)
    step, state, meta = ck.restore_latest(_abstract(_state(0.0)))
    assert step == 1 and float(state["w"][0, 0]) == 1.0  # fell back to the previous one
    ck.save(2, _state(5.0), {"step": 2})  # the resumed run reaches step 2 again: rewritten
    ck.close()
    ck = Checkpointer(str(tmp_path), keep=3)
    step, state, meta = ck.restore_latest(_abstract(_state(0.0)))
    assert step == 2 and float(state["w"][0, 0]) == 5.0 and meta == {"step": 2}
    ck.close()


def test_keep_checkpoints_zero_is_refused(tmp_path):
    with pytest.raises(ValueError, match="keep_checkpoints"):
        Checkpointer(str(tmp_path), keep=0)
