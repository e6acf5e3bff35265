"""Clipped policy loss: hand cases, gradients, aggregation modes, parity with verl (transcribed)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from qwenlong_jax import rl


# ---- Transcription of verl (verl/trainer/ppo/core_algos.py, verl/utils/torch_functional.py) ----
# Statement for statement, torch; only the dual-clip branch (clip_ratio_c, for A < 0) is
# dropped, because docs/recipe.md's objective has none.
def verl_masked_mean(values, mask, axis=None):
    return (values * mask).sum(axis=axis) / (mask.sum(axis=axis) + 1e-8)


def verl_agg_loss(loss_mat, loss_mask, loss_agg_mode):
    if loss_agg_mode == "token-mean":
        loss = verl_masked_mean(loss_mat, loss_mask)
    elif loss_agg_mode == "seq-mean-token-sum":
        seq_losses = torch.sum(loss_mat * loss_mask, dim=-1)
        loss = torch.mean(seq_losses)
    elif loss_agg_mode == "seq-mean-token-mean":
        seq_losses = torch.sum(loss_mat * loss_mask, dim=-1) / torch.sum(loss_mask, dim=-1)
        loss = torch.mean(seq_losses)
    else:
        raise ValueError(f"Invalid loss_agg_mode: {loss_agg_mode}")
    return loss


def verl_compute_policy_loss(
    old_log_prob,
    log_prob,
    advantages,
    response_mask,
    cliprange=None,
    cliprange_low=None,
    cliprange_high=None,
    loss_agg_mode="token-mean",
):
    negative_approx_kl = log_prob - old_log_prob
    negative_approx_kl = torch.clamp(negative_approx_kl, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    ppo_kl = verl_masked_mean(-negative_approx_kl, response_mask)
    pg_losses1 = -advantages * ratio
    if cliprange_low is None:
        cliprange_low = cliprange
    if cliprange_high is None:
        cliprange_high = cliprange
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - cliprange_low, 1 + cliprange_high)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_clipfrac = verl_masked_mean(torch.gt(pg_losses2, pg_losses1).float(), response_mask)
    pg_losses = clip_pg_losses1
    pg_loss = verl_agg_loss(loss_mat=pg_losses, loss_mask=response_mask, loss_agg_mode=loss_agg_mode)
    return pg_loss, pg_clipfrac, ppo_kl


# ---- hand-computed cases ----
# One row, three tokens, log-ratios log 1.1, log 1.5, log 0.5 -> ratio [1.1, 1.5, 0.5];
# clip range [0.8, 1.2].
RATIO = np.array([1.1, 1.5, 0.5])
OLD = np.array([[-1.0, -2.0, -0.5]], np.float32)
NEW = (OLD + np.log(RATIO)).astype(np.float32)
MASK = jnp.ones((1, 3))


def test_hand_case_positive_advantage():
    # A = +1: unclipped -ratio = [-1.1, -1.5, -0.5]; clipped -clip = [-1.1, -1.2, -0.8];
    # max = [-1.1, -1.2, -0.5], token-mean = -2.8 / 3 = -0.93333.
    # clipped > unclipped only at token 2 (-1.2 > -1.5): clip_frac = 1/3, all on the high side.
    # approx_kl = mean(-log ratio) = -(0.0953102 + 0.4054651 - 0.6931472) / 3 = 0.0641240.
    loss, st = rl.policy_loss(jnp.asarray(NEW), jnp.asarray(OLD), jnp.array([1.0]), MASK)
    np.testing.assert_allclose(loss, -2.8 / 3, rtol=1e-6)
    np.testing.assert_allclose(st["clip_frac"], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(st["clip_frac_high"], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(st["clip_frac_low"], 0.0)
    np.testing.assert_allclose(st["approx_kl"], 0.0641240, rtol=1e-5)
    np.testing.assert_allclose(st["ratio_mean"], 3.1 / 3, rtol=1e-6)
    np.testing.assert_allclose(st["ratio_max"], 1.5, rtol=1e-6)
    assert float(st["num_tokens"]) == 3.0


def test_hand_case_negative_advantage():
    # A = -1: unclipped ratio = [1.1, 1.5, 0.5]; clipped = [1.1, 1.2, 0.8];
    # max = [1.1, 1.5, 0.8], token-mean = 3.4 / 3; clipped > unclipped only at token 3.
    loss, st = rl.policy_loss(jnp.asarray(NEW), jnp.asarray(OLD), jnp.array([-1.0]), MASK)
    np.testing.assert_allclose(loss, 3.4 / 3, rtol=1e-6)
    np.testing.assert_allclose(st["clip_frac"], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(st["clip_frac_low"], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(st["clip_frac_high"], 0.0)


@pytest.mark.parametrize(
    "adv, expect_grad",
    [
        # d loss / d logp_t = d(-A * ratio_t)/d logp_t / count = -A * ratio_t / 3 where the unclipped
        # term is the max, 0 where the clipped (constant) term is.
        # A = +1: token 1 inside: -1.1/3; token 2 clipped: 0; token 3 (ratio .5 < .8, but -0.5 is
        # the max, so unclipped): -0.5/3.
        (1.0, [-1.1 / 3, 0.0, -0.5 / 3]),
        # A = -1: token 1: 1.1/3; token 2 (1.5 > 1.2, max is the unclipped 1.5): 1.5/3; token 3: 0.
        (-1.0, [1.1 / 3, 1.5 / 3, 0.0]),
    ],
)
def test_gradient_wrt_logp(adv, expect_grad):
    g = jax.grad(lambda lp: rl.policy_loss(lp, jnp.asarray(OLD), jnp.array([adv]), MASK)[0])(jnp.asarray(NEW))
    np.testing.assert_allclose(g[0], expect_grad, rtol=1e-5, atol=1e-7)


# Ragged batch: row 0 has 1 valid token, row 1 has 3; ratio 1 (logp == old_logp) so the
# per-token loss is -A: row 0 gives -1 (A = 1), row 1 gives +2 per token (A = -2).
RAGGED_MASK = jnp.array([[1, 0, 0], [1, 1, 1]], jnp.float32)
RAGGED_ADV = jnp.array([1.0, -2.0])


@pytest.mark.parametrize(
    "agg, expect",
    [
        ("token-mean", (-1 + 3 * 2) / 4),  # 1.25: every token weighs the same
        ("seq-mean-token-mean", (-1 + 2) / 2),  # 0.5: every row weighs the same
        ("seq-mean-token-sum", (-1 + 6) / 2),  # 2.5
    ],
)
def test_aggregation_modes_differ_on_ragged_masks(agg, expect):
    lp = jnp.full((2, 3), -1.0)
    loss, _ = rl.policy_loss(lp, lp, RAGGED_ADV, RAGGED_MASK, agg=agg)
    np.testing.assert_allclose(loss, expect, rtol=1e-6)


def test_seq_mean_gradient_weights_rows_equally():
    # seq-mean-token-mean: d/d logp_bt = -A_b * ratio / (len_b * B): row 0 -1/(1*2) = -0.5,
    # row 1 2/(3*2) = 0.33333 per valid token; token-mean: -A_b / 4 -> -0.25 and 0.5.
    lp = jnp.full((2, 3), -1.0)
    for agg, g0, g1 in (("seq-mean-token-mean", -0.5, 1 / 3), ("token-mean", -0.25, 0.5)):
        g = jax.grad(lambda x: rl.policy_loss(x, lp, RAGGED_ADV, RAGGED_MASK, agg=agg)[0])(lp)  # noqa: B023 - traced here
        np.testing.assert_allclose(g, [[g0, 0, 0], [g1, g1, g1]], rtol=1e-6, atol=1e-8)


def test_row_with_no_valid_token():
    # Row 2 is empty: token-mean is unchanged (1.25); seq-mean-token-mean counts it in B with 0:
    # (-1 + 2 + 0) / 3 = 0.33333 (verl would give NaN there: 0/0).
    mask = jnp.concatenate([RAGGED_MASK, jnp.zeros((1, 3))])
    adv = jnp.concatenate([RAGGED_ADV, jnp.array([5.0])])
    lp = jnp.full((3, 3), -1.0)
    l_tok, _ = rl.policy_loss(lp, lp, adv, mask, agg="token-mean")
    l_seq, _ = rl.policy_loss(lp, lp, adv, mask, agg="seq-mean-token-mean")
    np.testing.assert_allclose(l_tok, 1.25, rtol=1e-6)
    np.testing.assert_allclose(l_seq, 1 / 3, rtol=1e-6)


def test_all_padding_gives_zero_loss_and_zero_grad():
    lp = jnp.full((2, 3), -1.0)
    for agg in rl.AGG_MODES:

        def fn(x):
            return rl.policy_loss(x, lp - 0.3, jnp.array([1.0, -1.0]), jnp.zeros((2, 3)), agg=agg)  # noqa: B023 - used in this iteration

        (loss, st), g = jax.value_and_grad(fn, has_aux=True)(lp)
        assert float(loss) == 0.0
        np.testing.assert_array_equal(g, 0.0)
        assert all(np.isfinite(float(v)) for v in st.values())
        assert float(st["clip_frac"]) == 0.0 and float(st["ratio_max"]) == 0.0


def test_garbage_on_padding_does_not_leak():
    # A huge log-ratio at a padding position (as garbage logits there could give) changes nothing.
    lp = jnp.full((2, 3), -1.0)
    bad = lp.at[0, 2].set(1e4)
    l_ok, _ = rl.policy_loss(lp, lp, RAGGED_ADV, RAGGED_MASK)
    (l_bad, st), g = jax.value_and_grad(lambda x: rl.policy_loss(x, lp, RAGGED_ADV, RAGGED_MASK), has_aux=True)(bad)
    np.testing.assert_allclose(l_bad, l_ok, rtol=1e-7)
    assert float(g[0, 2]) == 0.0 and np.isfinite(np.asarray(g)).all()
    assert float(st["ratio_max"]) == 1.0


# ---- parity with the verl transcription ----
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("clip_low, clip_high", [(0.2, 0.2), (0.2, 0.28)])
def test_matches_verl_transcription_random(agg, clip_low, clip_high):
    rng = np.random.default_rng(7)
    b, t = 12, 40
    old = rng.normal(-2.0, 1.0, (b, t)).astype(np.float32)
    new = (old + rng.normal(0.0, 0.25, (b, t))).astype(np.float32)  # ratios ~ 0.5 .. 2
    adv_B = rng.normal(0.0, 1.0, b).astype(np.float32)
    lens = rng.integers(1, t + 1, b)  # ragged, no empty row
    mask = (np.arange(t)[None, :] < lens[:, None]).astype(np.float32)

    def ours(lp):
        return rl.policy_loss(
            lp, jnp.asarray(old), jnp.asarray(adv_B), jnp.asarray(mask), clip_low=clip_low, clip_high=clip_high, agg=agg
        )

    (loss, st), g = jax.value_and_grad(ours, has_aux=True)(jnp.asarray(new))

    new_t = torch.tensor(new, requires_grad=True)
    adv_t = torch.tensor(adv_B)[:, None] * torch.tensor(mask)  # verl: scores.unsqueeze(-1) * mask
    ref_loss, ref_clipfrac, ref_kl = verl_compute_policy_loss(
        torch.tensor(old),
        new_t,
        adv_t,
        torch.tensor(mask),
        cliprange=0.2,
        cliprange_low=clip_low,
        cliprange_high=clip_high,
        loss_agg_mode=agg,
    )
    ref_loss.backward()
    np.testing.assert_allclose(loss, ref_loss.item(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(st["clip_frac"], ref_clipfrac.item(), rtol=1e-6)
    np.testing.assert_allclose(st["approx_kl"], ref_kl.item(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g, new_t.grad.numpy(), rtol=1e-5, atol=1e-8)
    assert 0.05 < float(st["clip_frac"]) < 0.95  # the case exercises both regimes


def test_agg_loss_matches_verl_random():
    rng = np.random.default_rng(3)
    loss = rng.normal(size=(5, 9)).astype(np.float32)
    mask = (rng.uniform(size=(5, 9)) < 0.6).astype(np.float32)
    mask[:, 0] = 1.0
    for agg in rl.AGG_MODES:
        ref = verl_agg_loss(torch.tensor(loss), torch.tensor(mask), agg).item()
        # atol: float32 sums of mixed-sign terms in different orders.
        np.testing.assert_allclose(rl.agg_loss(jnp.asarray(loss), jnp.asarray(mask), agg), ref, rtol=1e-6, atol=1e-6)


# ---- actor loss assembly ----
def test_actor_loss_combines_terms():
    # Ragged batch above: pg (token-mean) = 1.25. Entropy per token e = [[.5, 9, 9], [1, 2, 3]]
    # (9s on padding), token-mean over the 4 valid = (.5 + 1 + 2 + 3) / 4 = 1.625.
    # KL "kl" with ref = logp - 0.1 -> d = 0.1 per token -> 0.1.
    # loss = 1.25 - 0.01 * 1.625 + 0.5 * 0.1 = 1.28375.
    lp = jnp.full((2, 3), -1.0)
    ent = jnp.array([[0.5, 9.0, 9.0], [1.0, 2.0, 3.0]])
    loss, st = rl.actor_loss(
        lp,
        lp,
        RAGGED_ADV,
        RAGGED_MASK,
        entropy_BT=ent,
        ref_logp_BT=lp - 0.1,
        entropy_coeff=0.01,
        kl_coef=0.5,
        kl_kind="kl",
    )
    np.testing.assert_allclose(loss, 1.28375, rtol=1e-6)
    np.testing.assert_allclose(st["entropy"], 1.625, rtol=1e-6)
    np.testing.assert_allclose(st["kl"], 0.1, rtol=1e-5)
    np.testing.assert_allclose(st["pg_loss"], 1.25, rtol=1e-6)
    assert float(st["actor_loss"]) == float(loss)
    # Without a reference and coefficients it is the plain policy loss.
    plain, st2 = rl.actor_loss(lp, lp, RAGGED_ADV, RAGGED_MASK)
    np.testing.assert_allclose(plain, 1.25, rtol=1e-6)
    assert "kl" not in st2 and "entropy" not in st2


def test_actor_loss_entropy_gradient():
    # d loss / d entropy_bt = -coeff / count on valid tokens (token-mean), 0 on padding.
    lp = jnp.full((2, 3), -1.0)
    g = jax.grad(lambda e: rl.actor_loss(lp, lp, RAGGED_ADV, RAGGED_MASK, entropy_BT=e, entropy_coeff=0.001)[0])(
        jnp.ones((2, 3))
    )
    np.testing.assert_allclose(g, -0.001 / 4 * np.asarray(RAGGED_MASK), rtol=1e-6)


def test_errors():
    lp = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="agg must be one of"):
        rl.policy_loss(lp, lp, RAGGED_ADV, RAGGED_MASK, agg="seq-mean")
    with pytest.raises(ValueError, match="old_logp_BT must have shape"):
        rl.policy_loss(lp, jnp.zeros((2, 4)), RAGGED_ADV, RAGGED_MASK)
    with pytest.raises(ValueError, match="clip_low"):
        rl.policy_loss(lp, lp, RAGGED_ADV, RAGGED_MASK, clip_low=1.5)
    with pytest.raises(ValueError, match="needs entropy_BT"):
        rl.actor_loss(lp, lp, RAGGED_ADV, RAGGED_MASK, entropy_coeff=0.001)
    with pytest.raises(ValueError, match="needs ref_logp_BT"):
        rl.actor_loss(lp, lp, RAGGED_ADV, RAGGED_MASK, kl_coef=0.1)


def test_jit_and_bf16_inputs():
    # The loss is computed in float32 whatever the input dtype; jit with agg static.
    f = jax.jit(rl.policy_loss, static_argnames=("agg",))
    lp = jnp.full((2, 3), -1.0, jnp.bfloat16)
    loss, st = f(lp, lp, RAGGED_ADV, RAGGED_MASK, agg="seq-mean-token-mean")
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, 0.5, rtol=1e-6)
    assert math.isfinite(float(st["approx_kl"]))
