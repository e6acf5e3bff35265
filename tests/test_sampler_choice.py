"""rl.sampler picks the rollout's schedule and never its samples: the RL rollout with the group
refill sampler equals the lockstep one response for response, with fewer sample-steps; a name
that is not a sampler is a one-line config error."""

import numpy as np
import pytest

from qwenlong_jax.cli import config_files
from qwenlong_jax.config import ConfigError, RLConfig
from qwenlong_jax.sampling.samplers import SAMPLERS
from tests.tiny_rollout import tiny_rollouts


def test_rollout_group_refill_equals_lockstep():
    rls = [RLConfig(group_size=3, mini_batch=5, overlong_buffer=2, rollout_batch=2, sampler=s) for s in SAMPLERS]
    outs = dict(zip(SAMPLERS, tiny_rollouts(5, 12, rls)))
    a, b = outs["lockstep"], outs["group_refill"]
    assert a.responses == b.responses and len(a.responses) == 15
    for f in ("reward_N", "length_N", "truncated_N"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    for x, y in zip(a.sampler_logps, b.sampler_logps):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert a.length_N.sum() <= b.token_steps <= a.token_steps


def test_unknown_sampler_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"rl\.sampler.*'eager'.*lockstep.*group_refill") as e:
        config_files.load_config("configs/default.py", ["rl.sampler=eager"])
    assert "\n" not in str(e.value)
