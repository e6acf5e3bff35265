"""Overlong shaping (docs/rewards.md section 6): float32 values and placement at index L - 1.

The parity test evaluates the reference's own expression on a torch int64 scalar (what verl's
reward manager does) and requires bit-equal float32 results.
"""

import numpy as np
import pytest
import torch

from qwenlong_jax.rewards import overlong_penalty, shape_reward, shape_rewards


def test_spec_values():
    assert float(overlong_penalty(9001)) == -0.0010000000474974513
    assert float(shape_reward(1.0, 9001)) == 0.9990000128746033
    assert float(shape_reward(1, 9333)) == 0.6669999957084656
    assert float(shape_reward(1.0, 10000)) == 0.0  # correct at max length: looks missing
    assert float(overlong_penalty(10500)) == -1.5  # unclamped past the maximum
    assert float(shape_reward(0, 9500)) == -0.5  # wrong answer: negative reward
    for length in (1, 5000, 9000):
        assert overlong_penalty(length) == 0.0
        assert float(shape_reward(1.0, length)) == 1.0
    assert overlong_penalty(9001).dtype == np.float32


def test_parameters():
    # max 100, buffer 10, factor 0.5: expected 90; L=95 -> -(5/10)*0.5 = -0.25
    assert float(overlong_penalty(95, 100, 10, 0.5)) == -0.25
    assert float(overlong_penalty(90, 100, 10, 0.5)) == 0.0
    with pytest.raises(ValueError, match="buffer_len"):
        overlong_penalty(5, 100, 0)
    with pytest.raises(ValueError, match="max_response_length"):
        overlong_penalty(5, 10, 100)


def _reference(score, length, max_len, buf, factor):
    valid_response_length = torch.tensor(length)  # int64, as attention_mask.sum() gives
    exceed_len = valid_response_length - (max_len - buf)
    overlong_reward = min(-exceed_len / buf * factor, 0)
    reward_tensor = torch.zeros(1, dtype=torch.float32)
    reward_tensor[0] = score + overlong_reward
    return reward_tensor[0].item()


@pytest.mark.parametrize(
    "max_len, buf, factor", [(10000, 1000, 1.0), (10000, 333, 0.7), (4096, 512, 1.3), (100, 7, 0.1)]
)
def test_bit_parity_with_torch_reference(max_len, buf, factor):
    lengths = sorted(
        {1, max_len - buf, max_len, max_len + buf // 2, *range(max_len - buf - 3, max_len + 5, max(1, buf // 97))}
    )
    for length in lengths:
        for score in (0, 1, 1.0, 0.0):
            want = _reference(score, length, max_len, buf, factor)
            assert float(shape_reward(score, length, max_len, buf, factor)) == want, length


def test_shape_rewards_writes_at_last_valid_token():
    rewards_BW = shape_rewards([1.0, 0.0, 1.0, 1.0], [3, 9001, 9333, 10000], width=10000)
    assert rewards_BW.dtype == np.float32 and rewards_BW.shape == (4, 10000)
    expected = {(0, 2): 1.0, (1, 9000): -0.0010000000474974513, (2, 9332): 0.6669999957084656, (3, 9999): 0.0}
    for (b, t), value in expected.items():
        assert float(rewards_BW[b, t]) == value
    mask = np.ones_like(rewards_BW, dtype=bool)
    for b, t in expected:
        mask[b, t] = False
    assert not rewards_BW[mask].any()  # every other position stays 0
    # the array path and the scalar path agree bit for bit
    assert float(rewards_BW[1, 9000]) == float(shape_reward(0.0, 9001))


def test_shape_rewards_rejects_bad_lengths():
    with pytest.raises(ValueError, match="lengths_B"):
        shape_rewards([1.0], [0], width=8)
    with pytest.raises(ValueError, match="lengths_B"):
        shape_rewards([1.0], [9], width=8)
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        shape_rewards([1.0, 0.0], [3], width=8)
