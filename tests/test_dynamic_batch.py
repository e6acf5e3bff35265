"""rl.loss_scope="dynamic": the reference recipe's dynamic-batch weighting (verl's actor with
use_dynamic_bsz: micro-batches of at most a token budget, balanced by length, each one's
token-mean scaled by len(micro-batch) / mini-batch size), checked against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwenlong_jax.config import ConfigError, RLConfig
from qwenlong_jax.rl import dynamic_batch, grpo_step
from qwenlong_jax.rl.policy_loss import actor_loss
from qwenlong_jax.run.train_state import TrainState
from tests.test_rl_update import CFG, SGD, G, _batch, _groups, _leaves, _ls, _params, _update


def test_partition_by_hand():
    """Lengths 100, 100, 20, 20 under a budget of 120: K = ceil(240 / 120) = 2. The largest
    differencing method merges the two 100s ({1} | {0}, spread 0), then the two 20s ({3} | {2}),
    then those two states, largest set with smallest: {1, 2} and {0, 3}, 120 each."""
    assert dynamic_batch.balanced_partitions([100, 100, 20, 20], 2) == [[1, 2], [0, 3]]
    # 8|7 and 6|5 differ by 1, 4 by 4: 4 joins 7 against 8 ({4, 7} | {8}, spread 3), then
    # 6|5 is laid against it the other way: {4, 7, 5} = 16 | {8, 6} = 14 (KK, not the perfect 15).
    assert dynamic_batch.balanced_partitions([8, 7, 6, 5, 4], 2) == [[1, 3, 4], [0, 2]]
    assert dynamic_batch.balanced_partitions([5, 3], 1) == [[0, 1]]
    with pytest.raises(ValueError):
        dynamic_batch.balanced_partitions([5, 3], 3)


def test_weights_by_hand():
    # (prompt + response, response): partitions {1, 2} with 5 + 5 response tokens, {0, 3}
    # with 10 + 3; each holds 2 of the 4 sequences: weights (2/4)/10 and (2/4)/13 per token.
    seq = np.asarray([100, 100, 20, 20, 7])
    resp = np.asarray([10, 5, 5, 3, 0])  # the last row is padding: no sequence
    w = dynamic_batch.micro_batch_weights(seq, resp, 120)
    np.testing.assert_allclose(w, [0.5 / 13, 0.5 / 10, 0.5 / 10, 0.5 / 13, 0.0])
    # A budget that holds everything: one micro-batch, the exact token-mean 1/23.
    np.testing.assert_allclose(dynamic_batch.micro_batch_weights(seq, resp, 1000)[:4], 1 / 23)
    # 3 micro-batches (ceil(240 / 100)): {0}, {1}, {2, 3}.
    np.testing.assert_allclose(
        dynamic_batch.micro_batch_weights(seq, resp, 100)[:4], [0.25 / 10, 0.25 / 5, 0.5 / 8, 0.5 / 8]
    )
    # One sequence each (ceil(240 / 60) = 4): the sequence mean, 1 / (4 len).
    np.testing.assert_allclose(dynamic_batch.micro_batch_weights(seq, resp, 60)[:4], 1 / (4 * resp[:4]))


def test_actor_loss_with_coefficients_is_the_reference_sum():
    """loss = sum_p (S_p / S) * (token-mean pg_p - c * token-mean entropy_p + k * token-mean kl_p)."""
    rng = np.random.default_rng(0)
    B, T = 4, 12
    resp = np.asarray([10, 5, 5, 3])
    mask = (np.arange(T)[None] < resp[:, None]).astype(np.float32)
    logp, old, ref, ent = (rng.normal(-1, 0.3, (B, T)).astype(np.float32) for _ in range(4))
    adv = rng.normal(size=B).astype(np.float32)
    kw = dict(
        entropy_BT=jnp.asarray(ent),
        ref_logp_BT=jnp.asarray(ref),
        clip_low=0.2,
        clip_high=0.28,
        entropy_coeff=0.01,
        kl_coef=0.1,
    )
    coef = dynamic_batch.micro_batch_weights(np.asarray([100, 100, 20, 20]), resp, 120)[:, None] * mask
    got, _ = actor_loss(
        jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask), token_coef_BT=jnp.asarray(coef), **kw
    )
    want = 0.0
    for part in ([1, 2], [0, 3]):

        def sub(x, part=part):
            return jnp.asarray(x[part])

        lp, _ = actor_loss(
            sub(logp),
            sub(old),
            sub(adv),
            sub(mask),
            entropy_BT=sub(ent),
            ref_logp_BT=sub(ref),
            **{k: v for k, v in kw.items() if k not in ("entropy_BT", "ref_logp_BT")},
        )
        want += (len(part) / 4) * float(lp)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    # ... which is not the exact token-mean over the mini-batch.
    exact, _ = actor_loss(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask), **kw)
    assert abs(float(exact) - want) > 1e-3


def _seq_tokens(prompts, responses, shape):
    return (np.repeat([len(p) for p in prompts], G) + np.asarray([len(r) for r in responses])).reshape(shape)


def test_dynamic_update_is_the_hand_loss_and_ignores_the_physical_split():
    """grpo_update with scope "dynamic" on 4 groups (16 sequences) under a budget that makes
    several micro-batches: its loss is the hand sum over the reference's partition, computed
    from the model's own per-token logprobs and entropies; 1, 2 or 4 physical micro-batches give
    the same update; and it differs from the exact token-mean."""
    ls = _ls(scope="dynamic")
    params = _params()
    prompts, responses, adv = _groups(4, 0, seed=5)
    budget = 40
    state = TrainState.create(params, SGD)
    out = {}
    for U in (1, 2, 4):
        b = _batch(params, prompts, responses, adv, 1, U, ls)
        b["coef_NR"] = dynamic_batch.token_coef(b["mask_NR"], _seq_tokens(prompts, responses, b["adv_N"].shape), budget)
        out[U] = _update(SGD, ls, state, b)
        if U == 1:
            b1 = b
    # Hand: per-token loss from the model's logprobs at the current params.
    mb = {k: v[0, 0] for k, v in b1.items()}
    logp, ent = jax.jit(lambda p, x: grpo_step.micro_logprobs(CFG, p, x, ls))(params, mb)
    logp, ent, old, mask = map(np.asarray, (logp, ent, mb["old_logp_NR"], mb["mask_NR"]))
    a = mb["adv_N"][:, None]
    ratio = np.exp(logp - old)
    pg = np.maximum(-a * ratio, -a * np.clip(ratio, 1 - ls.clip_low, 1 + ls.clip_high))
    tok = pg - ls.entropy_coeff * ent
    seq = _seq_tokens(prompts, responses, (-1,))
    k = int(np.ceil(seq.sum() / budget))
    parts = dynamic_batch.balanced_partitions(seq.tolist(), k)
    assert k > 2 and len(parts) == k
    want = sum(len(p) / len(seq) * (tok[p] * mask[p]).sum() / mask[p].sum() for p in parts)
    for new, m in out.values():
        np.testing.assert_allclose(float(m["actor_loss"]), want, rtol=2e-5)
        for x, y in zip(_leaves(out[1][0].params), _leaves(new.params)):
            np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)
    exact, _ = _update(SGD, _ls(), state, _batch(params, prompts, responses, adv, 1, 1, _ls()))
    assert not all(
        np.allclose(x, y, rtol=1e-4, atol=1e-6) for x, y in zip(_leaves(exact.params), _leaves(out[1][0].params))
    )


def test_config_dynamic_scope_needs_a_budget_and_token_mean():
    assert RLConfig().loss_scope == "mini_batch"  # the default stays the exact token-mean
    RLConfig(loss_scope="dynamic", token_budget=80_000)
    with pytest.raises(ConfigError, match="rl.token_budget must be > 0"):
        RLConfig(loss_scope="dynamic")
    with pytest.raises(ConfigError, match="equals 'mini_batch'"):
        RLConfig(loss_scope="dynamic", token_budget=10, loss_agg="seq-mean-token-mean")
    with pytest.raises(ConfigError, match="read only with rl.loss_scope='dynamic'"):
        RLConfig(token_budget=10)
