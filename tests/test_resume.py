"""Resume == uninterrupted: stop after N steps, SIGTERM, SIGKILL.

A run stopped and resumed must end with bitwise the same TrainState (params AND optimizer
state, read from the final orbax checkpoint) and the same metrics.jsonl rows as one
uninterrupted run, except the wall-clock fields in WALL_CLOCK_KEYS. The smoke config is
shrunk further (1-2 steps per phase, one eval example) and DAPO filtering is switched off so
that every RL step really updates the params (with a random model every group has accuracy
0 and would otherwise be filtered, making RL resume trivially equal).

In-process runs use one CPU device (conftest makes 8 fake ones); the subprocess runs see one
device (XLA_FLAGS cleared), and are compared only with other subprocess runs.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import configs.smoke
from qwenlong_jax.config import PhaseConfig, RetroConfig, from_config_dict
from qwenlong_jax.data.schema import Record
from qwenlong_jax.run.curriculum import Difficulty, PhaseData
from qwenlong_jax.run.metrics import read_metrics
from qwenlong_jax.run.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Metrics that measure time, not training: the only keys allowed to differ after a resume.
WALL_CLOCK_KEYS = frozenset(
    {
        "gen_tokens_per_s",
        "train_tokens_per_s",
        "time/generate_seconds",
        "time/reward_seconds",
        "time/update_seconds",
        "time/eval_seconds",
        "time/step_seconds",
    }
)
TOTAL_STEPS = 4  # sft 1 + rl_short 2 + rl_long 1


def small_config():
    c = configs.smoke.get_config()
    c.rl.dynamic_sampling = False  # every group trains: RL steps change params and optimizer state
    c.phases.sft.steps = 1
    c.phases.rl_short.steps = 2
    c.phases.rl_long.steps = 1
    c.data.update(synthetic_per_phase=4, eval_lengths=(64,), eval_per_length=1, eval_max_new_tokens=4)
    c.checkpoint_every = 1
    return c


# Command-line form of small_config() for the subprocess tests.
SMALL_FLAGS = [
    "--config.rl.dynamic_sampling=False",
    "--config.phases.sft.steps=1",
    "--config.phases.rl_short.steps=2",
    "--config.phases.rl_long.steps=1",
    "--config.data.synthetic_per_phase=4",
    "--config.data.eval_lengths=(64,)",
    "--config.data.eval_per_length=1",
    "--config.data.eval_max_new_tokens=4",
    "--config.checkpoint_every=1",
]


def final_state(workdir: str) -> tuple[int, dict]:
    """(step, TrainState pytree as restored arrays) of the newest checkpoint in workdir."""
    ckdir = os.path.join(workdir, "checkpoints")
    step = max(int(d) for d in os.listdir(ckdir) if d.isdigit())
    return step, ocp.StandardCheckpointer().restore(os.path.join(ckdir, str(step), "state"))


def assert_states_equal(a: dict, b: dict) -> None:
    leaves_a = jax.tree_util.tree_leaves_with_path(a)
    leaves_b = jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in leaves_a] == [p for p, _ in leaves_b]
    assert len(leaves_a) > 10
    for (path, x), (_, y) in zip(leaves_a, leaves_b):
        assert np.array_equal(np.asarray(x), np.asarray(y)), f"{jax.tree_util.keystr(path)} differs"


def comparable_metrics(workdir: str) -> list[dict]:
    rows = read_metrics(workdir)
    timing = {k for r in rows for k in r if k.endswith("_per_s") or k.endswith("_seconds")}
    assert timing <= WALL_CLOCK_KEYS, f"new wall-clock metrics {timing - WALL_CLOCK_KEYS}: list them"
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK_KEYS} for r in rows]


_CACHE_FLAGS = {"jax_compilation_cache_dir": None, "jax_persistent_cache_min_compile_time_secs": 0.0}


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    """A persistent compilation cache (keyed by the compiled program) shared by the runs of
    this file: the stopped, resumed and killed runs reuse the first run's executables instead
    of compiling again, which is most of their time on CPU. Same executables, same numerics."""
    from jax._src import compilation_cache

    path = str(tmp_path_factory.mktemp("jax_cache"))
    old = {k: getattr(jax.config, k) for k in _CACHE_FLAGS}
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    compilation_cache.reset_cache()  # re-read the settings (the cache initialises once)
    yield path
    for k, v in old.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    cfg = from_config_dict(small_config())
    summary = Trainer(cfg, workdir, quiet=True, devices=jax.devices()[:1]).run()
    assert summary["steps"] == TOTAL_STEPS
    return workdir


def test_stop_and_resume_is_bitwise_equal(uninterrupted, tmp_path):
    cfg = from_config_dict(small_config())
    workdir = str(tmp_path)
    # Stop after 2 steps: inside rl_short, so the grain iterator, the per-step RNG and the
    # optimizer state all resume mid-phase; the second phase boundary is crossed after resuming.
    out = Trainer(cfg, workdir, quiet=True, stop_after_steps=2, devices=jax.devices()[:1]).run()
    assert out == {"stopped": True, "step": 2}
    assert final_state(workdir)[0] == 2
    assert [r["step"] for r in read_metrics(workdir)] == [1, 2]
    summary = Trainer(cfg, workdir, quiet=True, devices=jax.devices()[:1]).run()
    assert summary["steps"] == TOTAL_STEPS

    step_a, state_a = final_state(uninterrupted)
    step_b, state_b = final_state(workdir)
    assert step_a == step_b == TOTAL_STEPS
    assert_states_equal(state_a, state_b)
    # The RL steps did train (otherwise equality above would say little).
    rows = read_metrics(workdir)
    assert all(
        r["kept_groups"] == 2 and r["nonfinite_updates"] == 0 and r["updates"] > 0 for r in rows if r["phase"] != "sft"
    )
    assert int(state_b["step"]) == TOTAL_STEPS
    assert comparable_metrics(workdir) == comparable_metrics(uninterrupted)
    assert [r["step"] for r in rows] == list(range(1, TOTAL_STEPS + 1))


def test_a_stop_requested_on_another_process_stops_this_one(tmp_path, monkeypatch):
    """Multi-host: every process stops at the step where any one of them had a request
    (run/stop.agreed, an all-gather of the flag), so they checkpoint together."""
    from qwenlong_jax.parallel import sharding
    from qwenlong_jax.run import loop as loop_mod, stop as stop_mod

    assert not stop_mod.agreed(False) and stop_mod.agreed(True)  # one process: its own request
    with monkeypatch.context() as m:  # two processes, the other one asked
        m.setattr(sharding, "process_allgather_ints", lambda x: np.stack([x, np.ones_like(x)]))
        assert stop_mod.agreed(False)
    asked = []

    def other_process_stops_at_step_2(requested: bool) -> bool:
        asked.append(requested)
        return len(asked) == 2

    monkeypatch.setattr(loop_mod, "agreed", other_process_stops_at_step_2)
    out = Trainer(from_config_dict(small_config()), str(tmp_path), quiet=True, devices=jax.devices()[:1]).run()
    assert out == {"stopped": True, "step": 2} and asked == [False, False]  # no request here
    assert final_state(str(tmp_path))[0] == 2


def test_resume_restores_before_reading_init_from(tmp_path):
    """A resumed run restores its checkpoint straight into the run's layout and never reads
    model.init_from's weights (it used to load the whole HF checkpoint, then throw it away): with
    the weights file gone after the stop, the run resumes -- mid-SFT, where the next step's batch
    had already been drawn while the stopped step ran -- to the same end as an uninterrupted one."""
    import shutil

    from configs.default import BASE

    def config(base):
        c = small_config()
        c.model.init_from = str(base)
        c.phases.sft.steps = 3
        return from_config_dict(c)

    base = tmp_path / "base"
    shutil.copytree(BASE, base)
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    assert Trainer(config(base), full, quiet=True, devices=jax.devices()[:1]).run()["steps"] == TOTAL_STEPS + 2
    out = Trainer(config(base), resumed, quiet=True, stop_after_steps=1, devices=jax.devices()[:1]).run()
    assert out == {"stopped": True, "step": 1}
    os.remove(base / "model.safetensors")  # a resume must not need the weights the run started from
    assert Trainer(config(base), resumed, quiet=True, devices=jax.devices()[:1]).run()["steps"] == TOTAL_STEPS + 2
    assert_states_equal(final_state(full)[1], final_state(resumed)[1])
    assert comparable_metrics(resumed) == comparable_metrics(full)


def test_resume_across_a_kl_coef_change(tmp_path, capsys):
    """A checkpoint written with another rl.kl_coef is resumed from, not taken for unreadable
    (which used to restart the run at step 0): a reference the run no longer needs is dropped;
    a missing one is rebuilt where the phase takes its reference at its start anyway; in the
    middle of an RL phase without rl.ref_from the run stops with one line, checkpoint intact."""
    from qwenlong_jax.run.trainer import TrainingError

    def cfg(kl):
        c = small_config()
        c.rl.kl_coef = kl
        return from_config_dict(c)

    dev = jax.devices()[:1]
    # kl 0 stopped after the SFT step, resumed with kl 0.5: goes on at step 2, with a reference.
    a = str(tmp_path / "a")
    assert Trainer(cfg(0.0), a, quiet=True, stop_after_steps=1, devices=dev).run() == {"stopped": True, "step": 1}
    assert final_state(a)[1]["ref_params"] is None
    assert Trainer(cfg(0.5), a, quiet=True, stop_after_steps=1, devices=dev).run() == {"stopped": True, "step": 2}
    assert Trainer(cfg(0.5), a, quiet=True, devices=dev).run()["steps"] == TOTAL_STEPS
    step, state = final_state(a)
    assert step == TOTAL_STEPS and state["ref_params"] is not None
    assert [r["step"] for r in read_metrics(a)] == list(range(1, TOTAL_STEPS + 1))
    assert all("kl" in r for r in read_metrics(a) if r["phase"] != "sft")
    # kl 0 stopped inside rl_short, resumed with kl 0.5: the phase's starting policy is gone.
    b = str(tmp_path / "b")
    Trainer(cfg(0.0), b, quiet=True, stop_after_steps=2, devices=dev).run()
    with pytest.raises(
        TrainingError,
        match=r"written with rl.kl_coef=0, in the middle of RL phase "
        r"'rl_short'.*kl_coef=0, or set rl.ref_from",
    ) as e:
        Trainer(cfg(0.5), b, quiet=True, devices=dev).run()
    assert "\n" not in str(e.value) and final_state(b)[0] == 2
    # kl 0.5 stopped inside rl_short, resumed with kl 0: the saved reference is dropped.
    c = str(tmp_path / "c")
    Trainer(cfg(0.5), c, quiet=True, stop_after_steps=2, devices=dev).run()
    assert final_state(c)[1]["ref_params"] is not None
    assert Trainer(cfg(0.0), c, quiet=True, stop_after_steps=1, devices=dev).run() == {"stopped": True, "step": 3}
    assert final_state(c)[1]["ref_params"] is None
    assert "unreadable" not in capsys.readouterr().out


# --- the data side: every example exactly once per epoch across a stop/resume -------------


def _records(n: int) -> list[Record]:
    return [
        Record(id=f"r{i}", data_source="docqa", prompt=f"p{i}", ground_truth="a", answer="a", num_prompt_tokens=10)
        for i in range(n)
    ]


@pytest.mark.parametrize("stop_at", [1, 3, 5])
def test_phase_data_each_example_once_per_epoch_across_resume(stop_at):
    recs, hard = _records(7), _records(12)[7:]
    phase = PhaseConfig(name="p", kind="rl", max_input=100, batch=3, retrospective=True)
    retro = RetroConfig(hard_fraction=0.34, max_weight=8.0)  # 1 hard example per batch of 3
    by_id = {r.id: r for r in recs + hard}
    difficulty = Difficulty()
    difficulty.update([r.id for r in hard], [0.0, 0.5, 0.25, 1.0, 0.1])

    def draws(pdata, n):
        return [[r.id for r in pdata.next_batch(3, difficulty)[0]] for _ in range(n)]

    n_batches = 14  # 14 batches x 2 own examples = 28 = 4 epochs of 7
    straight = draws(PhaseData(recs, hard, phase, retro, seed=5), n_batches)
    first = PhaseData(recs, hard, phase, retro, seed=5)
    head = draws(first, stop_at)
    state = json.loads(json.dumps(first.state()))  # what the checkpoint's JSON meta holds
    resumed = PhaseData(recs, [], phase, retro, seed=5)
    resumed.restore(state, by_id)
    resumed_draws = head + draws(resumed, n_batches - stop_at)
    assert resumed_draws == straight  # same examples, same order, same hard-pool draws

    own_ids = {r.id for r in recs}
    own = [i for batch in resumed_draws for i in batch if i in own_ids]  # in epoch order
    for epoch in range(4):
        seen = own[epoch * 7 : (epoch + 1) * 7]
        assert sorted(seen) == sorted(r.id for r in recs), f"epoch {epoch}: {seen}"
    assert len({tuple(own[e * 7 : (e + 1) * 7]) for e in range(4)}) > 1  # a new permutation per epoch
    assert all(sum(i not in own_ids for i in batch) == 1 for batch in resumed_draws)  # one hard each
    # The hard example is shuffled in, not always last (where a surplus cut would drop it).
    assert len({[i in own_ids for i in batch].index(False) for batch in resumed_draws}) > 1


# --- subprocess runs: SIGTERM and SIGKILL -----------------------------------------------------


def _env() -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # smoke's mesh is one device
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir  # compile_cache
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def _start(workdir: str, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "qwenlong_jax.train",
        "--config",
        os.path.join(REPO, "configs", "smoke.py"),
        "--workdir",
        workdir,
        *SMALL_FLAGS,
        *extra,
    ]
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _checkpoint_steps(workdir: str) -> list[int]:
    ckdir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckdir):
        return []
    return sorted(int(d) for d in os.listdir(ckdir) if d.isdigit())


def _wait_for_checkpoint(proc: subprocess.Popen, workdir: str, after: int, timeout: float = 300) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        steps = [s for s in _checkpoint_steps(workdir) if s > after]
        if steps:
            return steps[-1]
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"run exited ({proc.returncode}) before a checkpoint > {after}:\n{err[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no checkpoint > {after} within {timeout}s")


def _run_to_end(workdir: str, *extra: str, timeout: float = 600) -> str:
    proc = _start(workdir, *extra)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def test_sigterm_checkpoints_exits_0_and_resumes(tmp_path):
    workdir = str(tmp_path)
    proc = _start(workdir)
    first = _wait_for_checkpoint(proc, workdir, after=0)
    t_signal = time.time()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=180)  # bounded: the current step, one save
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    saved = _checkpoint_steps(workdir)[-1]
    assert saved >= first and f"stopped at step {saved}" in out
    assert saved < TOTAL_STEPS, "the run finished before the signal: nothing tested"
    print(f"SIGTERM -> exit 0 in {time.time() - t_signal:.1f}s, checkpoint at step {saved}")
    before = read_metrics(workdir)
    assert [r["step"] for r in before] == list(range(1, saved + 1))

    out = _run_to_end(workdir)
    assert f"resumed from step {saved}" in out
    after = read_metrics(workdir)
    assert after[:saved] == before  # rows up to the checkpoint are kept as they were ...
    assert [r["step"] for r in after] == list(range(1, TOTAL_STEPS + 1))  # ... and continue from it
    assert _checkpoint_steps(workdir)[-1] == TOTAL_STEPS


# Longer phases so that three kills land before the end (7 steps, a checkpoint after each).
KILL_FLAGS = ("--config.phases.rl_short.steps=3", "--config.phases.rl_long.steps=3")
KILL_STEPS = 7


def test_sigkill_at_three_random_points_resumes_to_the_same_params(tmp_path):
    ref = str(tmp_path / "ref")
    _run_to_end(ref, *KILL_FLAGS)
    workdir = str(tmp_path / "killed")
    seed = int(os.environ.get("RESUME_TEST_SEED", "0"))
    rng = random.Random(seed)
    last = 0
    for kill in range(3):
        proc = _start(workdir, *KILL_FLAGS)
        _wait_for_checkpoint(proc, workdir, after=last)  # this start has made progress ...
        time.sleep(rng.uniform(0.0, 2.0))  # ... then anywhere: mid-step, mid-eval, mid-save
        if proc.poll() is not None:
            pytest.fail(f"kill {kill}: the run ended (rc {proc.returncode}) before SIGKILL (seed {seed})")
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        last = max(_checkpoint_steps(workdir))
        assert last < KILL_STEPS, f"kill {kill} came after the last step (seed {seed})"
    out = _run_to_end(workdir, *KILL_FLAGS)
    assert f"resumed from step {last}" in out
    # Records that survive: TensorBoard has every step (the killed runs flushed at
    # each checkpoint), and metrics.jsonl is strict JSON.
    from tests.tb_events import scalar_steps

    assert sorted(set(scalar_steps(os.path.join(workdir, "tb"), "lr"))) == list(range(1, KILL_STEPS + 1))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    _, state_ref = final_state(ref)
    step, state = final_state(workdir)
    assert step == KILL_STEPS
    assert_states_equal(state_ref, state)
    assert comparable_metrics(workdir) == comparable_metrics(ref)


def test_phase_data_two_shards_build_one_global_batch():
    """Two processes (threads here, with a barrier all-gather): each draws only from its own
    shard, both assemble the same global batch, and together they see every example once per
    epoch; the hard-pool share is rounded down to a multiple of the process count."""
    import threading

    import grain

    recs, hard = _records(8), _records(12)[8:]
    phase = PhaseConfig(name="p", kind="rl", max_input=100, batch=4, retrospective=True)
    retro = RetroConfig(hard_fraction=0.5, max_weight=8.0)  # 2 hard per batch of 4
    difficulty = Difficulty()
    difficulty.update([r.id for r in hard], [0.0, 0.5, 0.25, 1.0])
    barrier, slots = threading.Barrier(2), [None, None]
    out, local = [[], []], [[], []]

    def gather_for(i):
        def gather(x):
            slots[i] = x
            local[i].extend(x.tolist())
            barrier.wait()
            both = np.stack(slots)
            barrier.wait()
            return both

        return gather

    def run(i):
        pdata = PhaseData(
            recs,
            hard,
            phase,
            retro,
            seed=3,
            shard=grain.sharding.ShardOptions(i, 2, drop_remainder=True),
            gather=gather_for(i),
        )
        for _ in range(8):
            batch, hard_B = pdata.next_batch(4, difficulty)
            out[i].append(([r.id for r in batch], int(hard_B.sum())))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out[0] == out[1]  # the same global batches on both processes
    assert all(k == 2 for _, k in out[0])
    assert set(local[0]).isdisjoint(local[1])  # each process read only its shard
    own_ids = {r.id for r in recs}
    own = [i for batch, _ in out[0] for i in batch if i in own_ids]
    for epoch in range(2):  # 8 batches x 2 own = 16 = 2 epochs of 8
        assert sorted(own[epoch * 8 : (epoch + 1) * 8]) == sorted(r.id for r in recs)
