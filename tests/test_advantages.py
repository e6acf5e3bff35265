"""GRPO advantages: hand-computed cases and parity with a transcription of verl's function."""

from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from qwenlong_jax import rl


def verl_compute_grpo_outcome_advantage(
    token_level_rewards, response_mask, index, epsilon=1e-6, norm_adv_by_std_in_grpo=True
):
    """Transcription of verl/trainer/ppo/core_algos.py::compute_grpo_outcome_advantage (torch),
    kept statement for statement (config plumbing dropped)."""
    scores = token_level_rewards.sum(dim=-1)
    id2score = defaultdict(list)
    id2mean = {}
    id2std = {}
    with torch.no_grad():
        bsz = scores.shape[0]
        for i in range(bsz):
            id2score[index[i]].append(scores[i])
        for idx in id2score:
            if len(id2score[idx]) == 1:
                id2mean[idx] = torch.tensor(0.0)
                id2std[idx] = torch.tensor(1.0)
            elif len(id2score[idx]) > 1:
                scores_tensor = torch.stack(id2score[idx])
                id2mean[idx] = torch.mean(scores_tensor)
                id2std[idx] = torch.std(scores_tensor)
            else:
                raise ValueError(f"no score in prompt index: {idx}")
        for i in range(bsz):
            if norm_adv_by_std_in_grpo:
                scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + epsilon)
            else:
                scores[i] = scores[i] - id2mean[index[i]]
        scores = scores.unsqueeze(-1) * response_mask
    return scores, scores


def _verl_adv_N(rewards_N, group_size, normalize_std=True):
    n = len(rewards_N)
    # verl puts the scalar score at the last valid token; a 1-token response suffices here.
    rewards = torch.tensor(np.asarray(rewards_N, np.float32)).reshape(n, 1)
    index = np.repeat(np.arange(n // group_size), group_size)
    adv, _ = verl_compute_grpo_outcome_advantage(
        rewards, torch.ones(n, 1), index, norm_adv_by_std_in_grpo=normalize_std
    )
    return adv[:, 0].numpy()


def test_hand_case_one_group():
    # r = [1, 0, 0, 1]: mean 0.5, centred ±0.5, sum of squares 4 * 0.25 = 1,
    # unbiased var 1/3, std sqrt(1/3) = 0.5773503; A = ±0.5 / (0.5773503 + 1e-6) = ±0.8660239.
    adv = rl.group_advantages(jnp.array([1.0, 0.0, 0.0, 1.0]), 4)
    expect = 0.5 / (np.sqrt(1 / 3) + 1e-6)
    np.testing.assert_allclose(adv, [expect, -expect, -expect, expect], rtol=1e-6)
    assert abs(expect - 0.8660239) < 1e-6
    assert adv.dtype == jnp.float32


def test_hand_case_two_groups_one_constant():
    # Group 0 = [1, 1, 1, 1]: all equal -> 0.
    # Group 1 = [0, 1, 0, 0]: mean 0.25, centred [-.25, .75, -.25, -.25], sum of squares
    # 3 * .0625 + .5625 = .75, unbiased var .25, std .5; A = centred / .500001.
    adv = rl.group_advantages(jnp.array([1.0, 1, 1, 1, 0, 1, 0, 0]), 4)
    np.testing.assert_array_equal(adv[:4], 0.0)
    np.testing.assert_allclose(adv[4:], np.array([-0.25, 0.75, -0.25, -0.25]) / 0.500001, rtol=1e-6)


def test_dr_grpo_is_mean_centred_only():
    # normalize_std=False: A = r - mean = [.5, -.5, -.5, .5]; and [3, 1] -> mean 2 -> [1, -1].
    adv = rl.group_advantages(jnp.array([1.0, 0, 0, 1, 3, 1, 2, 2]), 4, normalize_std=False)
    np.testing.assert_allclose(adv, [0.5, -0.5, -0.5, 0.5, 1, -1, 0, 0], atol=1e-7)


def test_equal_scores_give_exactly_zero_where_verl_leaves_roundoff():
    # 8 copies of 0.3 (not a dyadic float): verl's float32 mean is an ulp off, so its
    # (r - mean) / (std + 1e-6) is ~3e-8 / 1.03e-6 ~ 0.03, not 0. We force the documented 0.
    r = np.full(8, 0.3, np.float32)
    np.testing.assert_array_equal(rl.group_advantages(jnp.asarray(r), 8), 0.0)
    np.testing.assert_array_equal(rl.group_advantages(jnp.asarray(r), 8, normalize_std=False), 0.0)
    assert np.max(np.abs(_verl_adv_N(r, 8))) > 1e-3  # the reference artefact we depart from


def test_group_size_one_follows_verl():
    # verl special-cases a lone sample: mean 0, std 1 -> A = r / (1 + 1e-6); Dr.GRPO: A = r.
    r = jnp.array([2.0, -1.0, 0.5])
    np.testing.assert_allclose(rl.group_advantages(r, 1), np.array([2.0, -1.0, 0.5]) / (1 + 1e-6), rtol=1e-7)
    np.testing.assert_allclose(rl.group_advantages(r, 1, normalize_std=False), [2.0, -1.0, 0.5])
    np.testing.assert_allclose(rl.group_advantages(r, 1), _verl_adv_N(np.asarray(r), 1), rtol=1e-6)


@pytest.mark.parametrize("normalize_std", [True, False])
@pytest.mark.parametrize("group_size", [2, 8])
def test_matches_verl_transcription_on_random_scores(group_size, normalize_std):
    rng = np.random.default_rng(group_size)
    n = 16 * group_size
    # Mix: continuous scores (rule + overlong penalty style), 0/1 accuracies, constant groups.
    r = rng.uniform(-1.0, 1.0, n).astype(np.float32)
    r[: n // 2] = rng.integers(0, 2, n // 2)
    r[:group_size] = 1.0
    r[group_size : 2 * group_size] = -1.0
    ours = np.asarray(rl.group_advantages(jnp.asarray(r), group_size, normalize_std=normalize_std))
    ref = _verl_adv_N(r, group_size, normalize_std=normalize_std)
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=2e-6)


def test_jit_and_errors():
    # [1, 0], G = 2: mean .5, centred ±.5, unbiased var (.25 + .25) / 1 = .5, std .7071068;
    # A = ±.5 / (.7071068 + 1e-6) = ±.7071058.
    f = jax.jit(rl.group_advantages, static_argnums=(1, 2))
    a = 0.5 / (np.sqrt(0.5) + 1e-6)
    np.testing.assert_allclose(f(jnp.array([1.0, 0.0]), 2, True), [a, -a], rtol=1e-6)
    with pytest.raises(ValueError, match="multiple of group_size=4"):
        rl.group_advantages(jnp.zeros(6), 4)
    with pytest.raises(ValueError, match="1-D"):
        rl.group_advantages(jnp.zeros((2, 4)), 4)
    with pytest.raises(ValueError, match="group_size"):
        rl.group_advantages(jnp.zeros(4), 0)


def test_token_advantages_zero_on_padding():
    adv_B = jnp.array([0.5, -2.0, jnp.nan])
    mask_BT = jnp.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    out = rl.token_advantages(adv_B, mask_BT)
    # The NaN row has no valid token, so it must not leak: all zeros.
    np.testing.assert_array_equal(out, [[0.5, 0.5, 0.0], [-2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="adv_B"):
        rl.token_advantages(jnp.zeros(2), mask_BT)
