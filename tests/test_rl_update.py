"""The GRPO update's weighting: an all-padding mini-batch is not applied (state bitwise
unchanged), padding never dilutes a gradient, the "mini_batch" scope is the exact mean over the
mini-batch however it is split (packed or not), "micro_batch" is the mean of micro-batch means,
KL to a reference enters the loss, PPO epochs repeat the updates, and the sampler/trainer
agreement numbers and truncated IS weights are what they say."""

import dataclasses
import functools

import jax
import numpy as np
import optax
import pytest

from qwenlong_jax import models
from qwenlong_jax.config import OptimConfig
from qwenlong_jax.rl import grpo_step, old_logprobs, packing
from qwenlong_jax.run.train_state import TrainState, make_optimizer

CFG = models.get_model_config(
    "tiny",
    vocab_size=128,
    hidden_size=32,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    intermediate_size=64,
    num_layers=2,
    logits_chunk=32,
)
G, R = 4, 9
SGD = optax.chain(optax.identity(), optax.inject_hyperparams(optax.sgd)(learning_rate=1.0))
ADAMW = make_optimizer(OptimConfig(lr=1e-2, weight_decay=0.01))


@functools.cache
def _logp_fn(ls):
    return jax.jit(lambda p, x: old_logprobs.policy_logprobs(CFG, ls, p, x))


@functools.cache
def _update_fn(tx, ls):
    return jax.jit(lambda s, b: grpo_step.grpo_update(CFG, ls, tx, s, b))


def _groups(num_real, num_pad, seed=0):
    rng = np.random.default_rng(seed)
    prompts = [list(rng.integers(1, 128, size=int(rng.integers(4, 12)))) for _ in range(num_real)]
    # Ragged responses: groups and micro-batches hold different token counts.
    responses = [list(rng.integers(1, 128, size=int(rng.integers(1, R + 1)))) for _ in range(num_real * G)]
    adv = rng.normal(size=num_real * G).astype(np.float32)
    return (
        prompts + [[0]] * num_pad,
        responses + [[]] * (G * num_pad),
        np.concatenate([adv, np.zeros(G * num_pad, np.float32)]),
    )


def _batch(params, prompts, responses, adv, M, U, ls, packed=True):
    if packed:
        W = packing.round_up(max(len(p) for p in prompts) + G * R, 8)
        rows = packing.pack_groups(prompts, responses, G, W, R)
    else:
        rows = packing.unpacked_rows(prompts, responses, G, max(len(p) for p in prompts) + R, R)
    b = grpo_step.grpo_batch(rows, adv, M, U)
    logp_in = {k: v for k, v in b.items() if k != "old_logp_NR"}
    # old_logp slightly off the current policy, so ratios differ from 1 from the first update.
    old = _logp_fn(dataclasses.replace(ls, kl_coef=0.0, tis_cap=0.0, epochs=1, scope="mini_batch"))(params, logp_in)
    tok_NR = np.zeros((len(responses), R), np.float32)  # a layout-independent offset per token
    for n, resp in enumerate(responses):
        tok_NR[n, : len(resp)] = resp
    off = 0.05 * np.sin(tok_NR + np.arange(R)).astype(np.float32)
    b["old_logp_NR"] = np.asarray(old) + off.reshape(old.shape)
    return b


def _ls(**kw):
    base = grpo_step.LossSettings(clip_low=0.2, clip_high=0.28, agg="token-mean", entropy_coeff=0.01, temperature=0.7)
    return dataclasses.replace(base, **kw)


def _update(tx, ls, state, batch):
    return _update_fn(tx, ls)(state, batch)


def _params():
    return models.init_params(CFG, jax.random.key(0), init_std=0.2)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_all_padding_mini_batch_leaves_state_bitwise_unchanged():
    tx = ADAMW
    ls = _ls()
    params = _params()
    # Give AdamW non-zero moments first: a zero-gradient AdamW step would still move the params.
    state = TrainState.create(params, tx)
    state, _ = _update(tx, ls, state, _batch(params, *_groups(2, 0), 1, 1, ls))
    before = _leaves(state)
    pad = _batch(params, *_groups(0, 2), 1, 1, ls)
    assert pad["mask_NR"].sum() == 0
    new, m = _update(tx, ls, state, pad)
    for a, b in zip(before, _leaves(new)):
        np.testing.assert_array_equal(a, b)  # params, AdamW moments and count, step: bitwise
    assert int(m["empty_updates"]) == 1 and int(m["updates"]) == 0 and int(m["nonfinite_updates"]) == 0


@pytest.mark.parametrize("scope", ["mini_batch", "micro_batch"])
def test_padding_never_moves_or_dilutes(scope):
    """The issue's case: 2 groups padded to 4 with M=2 (the second update all padding), and
    padding micro-batches inside an update, give the unpadded update (AdamW, lr 1e-2)."""
    tx = ADAMW
    ls = _ls(scope=scope)
    params = _params()
    real, padded = _groups(2, 0), _groups(2, 2)
    # (M, U) padded vs the unpadded (1, U_ref): the second update all padding; two padding
    # micro-batches (each real group its own micro-batch, as in the reference layout).
    for (M, U), U_ref in (((2, 1), 1), ((1, 4), 2)):
        ref, m_ref = _update(tx, ls, TrainState.create(params, tx), _batch(params, *real, 1, U_ref, ls))
        got, m = _update(tx, ls, TrainState.create(params, tx), _batch(params, *padded, M, U, ls))
        assert int(got.step) == 1 and int(m["updates"]) == 1 and int(m["empty_updates"]) == M - 1
        # Equal up to float round-off of a differently shaped program (AdamW's first step is
        # ~lr = 1e-2 per weight; padding used to move weights by up to 6.8e-3).
        for a, b in zip(_leaves(ref.params), _leaves(got.params)):
            np.testing.assert_allclose(a, b, rtol=0, atol=5e-5)
        np.testing.assert_allclose(m["pg_loss"], m_ref["pg_loss"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(m["grad_norm"], m_ref["grad_norm"], rtol=1e-5)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_mini_batch_scope_is_the_exact_mean_however_split(agg):
    ls = _ls(agg=agg)
    params = _params()
    groups = _groups(4, 0, seed=1)
    state = TrainState.create(params, SGD)
    one, m1 = _update(SGD, ls, state, _batch(params, *groups, 1, 1, ls))
    for U in (2, 4):
        got, m = _update(SGD, ls, state, _batch(params, *groups, 1, U, ls))
        for a, b in zip(_leaves(one.params), _leaves(got.params)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
        for k in ("pg_loss", "entropy", "clip_frac", "actor_loss"):
            np.testing.assert_allclose(m[k], m1[k], rtol=2e-5, atol=1e-6)
    # The same update from the unpacked layout (one row per response; shared_prefix off).
    lsu = dataclasses.replace(ls, shared_prefix_segment=None)
    un, mu = _update(SGD, lsu, state, _batch(params, *groups, 1, 1, lsu, packed=False))
    for a, b in zip(_leaves(one.params), _leaves(un.params)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(mu["actor_loss"], m1["actor_loss"], rtol=2e-5, atol=1e-6)


def test_micro_batch_scope_is_the_mean_of_micro_batch_means():
    ls = _ls(scope="micro_batch")
    params = _params()
    prompts, responses, adv = _groups(2, 0, seed=2)
    state = TrainState.create(params, SGD)
    both, _ = _update(SGD, ls, state, _batch(params, prompts, responses, adv, 1, 2, ls))
    deltas = []
    for g in range(2):
        part = (prompts[g : g + 1], responses[g * G : (g + 1) * G], adv[g * G : (g + 1) * G])
        s, _ = _update(SGD, ls, state, _batch(params, *part, 1, 1, ls))
        deltas.append([b - a for a, b in zip(_leaves(params), _leaves(s.params))])
    for p0, d0, d1, got in zip(_leaves(params), deltas[0], deltas[1], _leaves(both.params)):
        np.testing.assert_allclose(got - p0, (d0 + d1) / 2, rtol=1e-4, atol=1e-6)
    # ... which is not the exact token mean when the groups hold different token counts.
    exact, _ = _update(SGD, _ls(), state, _batch(params, prompts, responses, adv, 1, 2, ls))
    assert not all(np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(_leaves(exact.params), _leaves(both.params)))


def test_kl_to_reference_enters_the_loss_and_is_reported():
    params = _params()
    ls0 = _ls()
    mb = jax.tree.map(lambda x: x[0, 0], _batch(params, *_groups(2, 0), 1, 1, ls0))
    mb["ref_logp_NR"] = mb["old_logp_NR"] - 0.3
    loss0, s0 = grpo_step.grpo_loss(CFG, ls0, params, mb)
    for kind in ("low_var_kl", "kl", "mse", "abs"):
        loss1, s1 = grpo_step.grpo_loss(CFG, _ls(kl_coef=0.5, kl_type=kind), params, mb)
        assert "kl" in s1 and "kl" not in s0 and abs(float(s1["kl"])) > 1e-3
        np.testing.assert_allclose(loss1 - loss0, 0.5 * s1["kl"], rtol=1e-4, atol=1e-6)


def test_epochs_repeat_the_updates():
    tx = ADAMW
    params = _params()
    batch = _batch(params, *_groups(4, 0), 2, 1, _ls())
    s1, m1 = _update(tx, _ls(epochs=1), TrainState.create(params, tx), batch)
    s2, m2 = _update(tx, _ls(epochs=2), TrainState.create(params, tx), batch)
    assert int(m1["updates"]) == 2 and int(s1.step) == 2
    assert int(m2["updates"]) == 4 and int(s2.step) == 4 and m2["by_update"]["loss"].shape == (4,)
    # The second epoch starts where the first ended: its first update sees ratios != 1.
    assert abs(float(m2["by_update"]["ratio_mean"][2]) - float(m1["by_update"]["ratio_mean"][0])) > 1e-6


def test_rollout_agreement_numbers_and_truncated_is():
    sampler = np.array([[-1.0, -2.0, -0.5, 0.0]], np.float32)
    old = np.array([[-1.1, -1.0, -0.5, 5.0]], np.float32)
    mask = np.array([[1, 1, 1, 0]], np.float32)
    w, st = old_logprobs.rollout_agreement(sampler, old, mask, tis_cap=2.0)
    d = np.array([-0.1, 1.0, 0.0])
    np.testing.assert_allclose(st["rollout/logp_diff_mean"], np.abs(d).mean(), rtol=1e-6)
    np.testing.assert_allclose(st["rollout/logp_diff_max"], 1.0, rtol=1e-6)  # padding ignored
    np.testing.assert_allclose(st["rollout/kl"], np.mean(np.exp(d) - d - 1), rtol=1e-5)
    np.testing.assert_allclose(w, [[np.exp(-0.1), 2.0, 1.0, 1.0]], rtol=1e-6)  # capped at C
    w0, st0 = old_logprobs.rollout_agreement(sampler, old, mask)
    np.testing.assert_array_equal(w0, np.ones_like(w0))
    assert "rollout/tis_weight_mean" not in st0


def test_tis_weights_scale_each_token_loss():
    params = _params()
    ls = _ls(entropy_coeff=0.0)
    mb = jax.tree.map(lambda x: x[0, 0], _batch(params, *_groups(2, 0), 1, 1, ls))
    loss, _ = grpo_step.grpo_loss(CFG, ls, params, mb)
    mb["is_weight_NR"] = np.full(mb["mask_NR"].shape, 0.5, np.float32)
    half, _ = grpo_step.grpo_loss(CFG, _ls(entropy_coeff=0.0, tis_cap=2.0), params, mb)
    np.testing.assert_allclose(half, 0.5 * loss, rtol=1e-5)


def test_ratio_max_is_the_true_maximum_over_micro_batches():
    """One update of 4 groups in 4 micro-batches: ratio_max is the largest ratio of any real
    token (it was a token-weighted sum of the per-micro-batch maxima, below the maximum)."""
    ls = _ls()
    params = _params()
    groups = _groups(4, 0, seed=3)
    b = _batch(params, *groups, 1, 4, ls)
    logp = np.asarray(_logp_fn(ls)(params, {k: v for k, v in b.items() if k != "old_logp_NR"}))
    ratio = np.exp(logp - b["old_logp_NR"])
    want = ratio[b["mask_NR"] > 0].max()
    per_micro = [ratio[0, u][b["mask_NR"][0, u] > 0].max() for u in range(4)]
    assert min(per_micro) < want - 1e-3  # the micro-batches' maxima differ
    _, m = _update(SGD, ls, TrainState.create(params, SGD), b)
    np.testing.assert_allclose(float(m["ratio_max"]), want, rtol=1e-5)


def test_empty_and_nonfinite_updates_are_counted_apart():
    """M = 3 updates: one real, one all padding (empty), one with a NaN advantage (non-finite)."""
    ls = _ls()
    params = _params()
    prompts, responses, adv = _groups(2, 1, seed=4)
    order = [0, 2, 1]  # group 2 is the padding: update 0 real, update 1 empty, update 2 NaN
    prompts = [prompts[g] for g in order]
    responses = [r for g in order for r in responses[g * G : (g + 1) * G]]
    adv = np.concatenate([adv[g * G : (g + 1) * G] for g in order])
    adv[2 * G] = np.nan
    state = TrainState.create(params, SGD)
    new, m = _update(SGD, ls, state, _batch(params, prompts, responses, adv, 3, 1, ls))
    assert (int(m["updates"]), int(m["empty_updates"]), int(m["nonfinite_updates"])) == (1, 1, 1)
    assert m["by_update"]["empty"].tolist() == [0, 1, 0] and m["by_update"]["nonfinite"].tolist() == [0, 0, 1]
    assert "skipped" not in m and int(new.step) == 1 and np.isfinite(float(m["ratio_max"]))
