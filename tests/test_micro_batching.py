"""The memory knobs change how the work is split, never the result: SFT gradient accumulation
over phases[sft].micro_rows equals the one-forward update, and sampling in chunks of
rl.rollout_batch prompts gives the same rollouts as one call."""

import jax
import numpy as np
import optax

from qwenlong_jax import models
from qwenlong_jax.config import RLConfig
from qwenlong_jax.rl.sft_step import pack_sft_rows, sft_update
from qwenlong_jax.run.train_state import TrainState
from tests.tiny_rollout import tiny_rollouts

CFG = models.get_model_config("tiny", vocab_size=64, hidden_size=32, num_layers=2)


def test_sft_micro_rows_equal_one_forward():
    rng = np.random.default_rng(0)
    # Uneven rows: response-token counts differ per row, so a per-micro-batch mean would differ.
    examples = [
        (rng.integers(1, 64, size=p).tolist(), rng.integers(1, 64, size=r).tolist())
        for p, r in [(5, 20), (9, 3), (4, 11), (12, 2)]
    ]
    rows = pack_sft_rows(examples, 25)
    assert len(rows["tokens_BW"]) == 4
    # Plain SGD (lr 1): the parameter change is the gradient itself, compared directly.
    tx = optax.chain(optax.identity(), optax.inject_hyperparams(optax.sgd)(learning_rate=1.0))
    state = TrainState.create(models.init_params(CFG, jax.random.key(0)), tx)
    step = jax.jit(lambda s, b: sft_update(CFG, tx, s, b))
    one, m1 = step(state, {k: v.reshape(1, 4, 25) for k, v in rows.items()})
    two, m2 = step(state, {k: v.reshape(2, 2, 25) for k, v in rows.items()})
    four, m4 = step(state, {k: v.reshape(4, 1, 25) for k, v in rows.items()})
    for other, m in ((two, m2), (four, m4)):
        for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(other.params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(m["nll"], m1["nll"], rtol=1e-5)
        np.testing.assert_allclose(m["grad_norm"], m1["grad_norm"], rtol=1e-5)
        assert float(m["num_tokens"]) == float(m1["num_tokens"]) == 36.0


def test_rollout_chunks_give_the_same_samples():
    rls = [RLConfig(group_size=3, mini_batch=4, overlong_buffer=2, rollout_batch=rb) for rb in (0, 2, 1)]
    outs = tiny_rollouts(4, 8, rls)
    for o in outs[1:]:
        assert o.responses == outs[0].responses
        np.testing.assert_array_equal(o.reward_N, outs[0].reward_N)
        np.testing.assert_array_equal(o.length_N, outs[0].length_N)
    assert len(outs[0].responses) == 12 and len(set(map(tuple, outs[0].responses))) > 1
