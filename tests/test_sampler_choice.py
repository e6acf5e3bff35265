"""rl.sampler picks the rollout's schedule and never its samples: the RL rollout with the group
refill sampler equals the lockstep one response for response, with fewer sample-steps; a name
that is not a sampler is a one-line config error."""

import jax
import numpy as np
import pytest

from qwenlong_jax import models
from qwenlong_jax.cli import config_files
from qwenlong_jax.config import ConfigError, PhaseConfig, RLConfig
from qwenlong_jax.data.schema import Record
from qwenlong_jax.data.tokenizer import load_tokenizer
from qwenlong_jax.run.rollout import rollout
from qwenlong_jax.run.step_shapes import rl_step_shapes


def test_rollout_group_refill_equals_lockstep():
    tok = load_tokenizer()
    cfg = models.get_model_config("tiny", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1)
    params = models.init_params(cfg, jax.random.key(1))
    recs = [
        Record(
            id=f"r{i}",
            data_source="synthetic_lookup",
            prompt=f"What is the code of SEPA {i} ?",
            ground_truth="Therefore, the answer is 472",
            answer="472",
        )
        for i in range(5)
    ]
    prompts = [tok.chat_prompt(r.prompt) for r in recs]
    phase = PhaseConfig(name="p", kind="rl", max_input=64, max_output=12, batch=5)
    outs = {}
    for s in ("lockstep", "group_refill"):
        rl = RLConfig(group_size=3, mini_batch=5, overlong_buffer=2, rollout_batch=2, sampler=s)
        outs[s] = rollout(
            cfg,
            params,
            tok,
            recs,
            prompts,
            shapes=rl_step_shapes(phase, rl, 64),
            rl=rl,
            key=jax.random.key(3),
            prefill_chunk=64,
        )
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
