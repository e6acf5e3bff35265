"""Retrospective sampling as the recipe means it: hard examples drawn into a step are trained,
not the first thing the keep-the-first-B cut throws away, and their sampling weight grows with
difficulty at the default settings (every pool member never solved, hard_threshold 0)."""

import types

import jax
import numpy as np

from qwenlong_jax.config import Config, PhaseConfig, RetroConfig, RLConfig
from qwenlong_jax.data.schema import Record
from qwenlong_jax.run import rl_round
from qwenlong_jax.run.curriculum import Difficulty, PhaseData
from qwenlong_jax.run.rollout import Rollout
from qwenlong_jax.run.step_shapes import rl_step_shapes

G = 8


def _records(prefix: str, n: int) -> list[Record]:
    return [
        Record(
            id=f"{prefix}{i}",
            data_source="docqa",
            prompt=f"{prefix}{i}",
            ground_truth="a",
            answer="a",
            num_prompt_tokens=10,
        )
        for i in range(n)
    ]


def _fake_rollout(cfg, params, tok, recs, prompts, *, shapes, rl, key, judge=None):
    """Every group's accuracy varies (half its responses right): every group is valid."""
    n = len(recs) * rl.group_size
    score = np.tile(np.asarray([0.0, 1.0], np.float32), n // 2)
    return Rollout(
        prompts=[list(p) for p in prompts],
        responses=[[5, 6]] * n,
        sampler_logps=[np.zeros(2, np.float32)] * n,
        texts=[""] * n,
        score_N=score,
        reward_N=score,
        acc_N=score == 1.0,
        length_N=np.full(n, 2, np.int32),
        truncated_N=np.zeros(n, bool),
    )


def test_hard_groups_drawn_with_surplus_are_trained(monkeypatch):
    """The 32B recipe's shape in small: 24 prompts generated per 8 trained (gen_batch 3x batch),
    a quarter of them (6) from the hard pool, every group valid, so 16 valid groups are surplus
    each step. The hard ones used to be appended last and always cut; now the cut falls on hard
    and fresh alike, and `hard_trained` says how many hard groups the update got."""
    monkeypatch.setattr(rl_round, "rollout", _fake_rollout)
    rl = RLConfig(group_size=G, gen_batch=24, mini_batch=2, max_gen_rounds=1, overlong_buffer=2)
    phase = PhaseConfig(name="rl_long", kind="rl", max_input=64, max_output=4, batch=8)
    cfg = Config(rl=rl, phases=(phase,))
    fresh, hard = _records("f", 48), _records("h", 12)
    difficulty = Difficulty()
    difficulty.update([r.id for r in hard], [0.0] * len(hard))  # never solved in the earlier phase
    pdata = PhaseData(fresh, hard, phase, RetroConfig(), seed=3)
    ctx = types.SimpleNamespace(
        cfg=cfg, mesh=jax.make_mesh((1,), ("data",)), mcfg=None, tok=None, prompt=lambda r: [1, 2, 3], judge=None
    )
    shapes = rl_step_shapes(phase, rl)
    hard_ids = {r.id for r in hard}
    trained, reported = [], []
    for step in range(12):
        s = rl_round.sample_groups(ctx, types.SimpleNamespace(params=None), step, shapes, pdata, difficulty)
        assert len(s.groups) == 8 and s.metrics["surplus_groups"] == 16
        assert s.metrics["hard_drawn"] == 6
        trained.append(sum(s.pool[g].record.id in hard_ids for g in s.groups))
        reported.append(s.metrics.get("hard_trained"))
    # Hard groups are 6 of the 24 valid ones: 8 x 6/24 = 2 expected per step, 24 over 12 steps.
    assert sum(trained) > 0 and 12 <= sum(trained) <= 36, trained
    assert reported == trained


def test_difficulty_weights_grow_with_difficulty_at_the_default_threshold():
    retro = RetroConfig()
    assert retro.hard_threshold == 0.0
    d = Difficulty()
    d.update(["once", "often", "solved_some"], [0.0, 0.0, 0.25])
    d.update(["often"], [0.0])
    d.update(["often"], [0.0])  # 24 failed attempts vs 8
    # Both never solved: both in the pool at the default threshold...
    assert d.hard(["once", "often", "solved_some"], retro.hard_threshold) == ["once", "often"]
    w = d.weights(["once", "often", "solved_some"], retro.max_weight, G)
    # ... with different weights: 1 / p, p = (successes + 1) / (attempts + 2).
    np.testing.assert_allclose(w, [10.0, 26.0, 10.0 / 3.0])
    assert w[1] > w[0] > w[2]
    # The cap still caps.
    np.testing.assert_allclose(d.weights(["often"], 12.0, G), [12.0])


def test_phase_data_draws_harder_pool_members_more_often():
    """At the default retro settings the draw follows the weights: a never-solved example seen
    in 4 visits (34) is drawn ~34/10 as often as one seen once (10); uniform before."""
    fresh, hard = _records("f", 30), _records("h", 2)
    d = Difficulty()
    d.update(["h0"], [0.0])
    for _ in range(4):
        d.update(["h1"], [0.0])
    phase = PhaseConfig(name="p", kind="rl", max_input=100, batch=4)
    pdata = PhaseData(fresh, hard, phase, RetroConfig(), seed=1)  # 1 hard per batch of 4
    counts = {"h0": 0, "h1": 0}
    for _ in range(600):
        recs, _ = pdata.next_batch(4, d)
        (drawn,) = [r.id for r in recs if r.id.startswith("h")]
        counts[drawn] += 1
    ratio = counts["h1"] / counts["h0"]
    assert 2.6 < ratio < 4.5, counts
