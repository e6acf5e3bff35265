"""DAPO overlong reward shaping, in float32 like the reference's torch arithmetic.

docs/rewards.md section 6. With L valid response tokens:
    penalty = min(-(L - (max_response_length - buffer_len)) / buffer_len * factor, 0)
0 up to max - buffer, linear to -factor at max, unclamped beyond. The reference computes it on
an int64 torch scalar, so the division yields float32 and score + penalty is rounded to float32
(L=9001: penalty -0.0010000000474974513, a correct answer 0.9990000128746033). The shaped reward
is written at index L - 1 of an all-zero [B, W] float32 array.

Departure: L < 1 is rejected (the reference would index -1 and write into the last column).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check(max_response_length: int, buffer_len: int) -> None:
    if buffer_len <= 0:
        raise ValueError(f"overlong buffer_len must be > 0, got {buffer_len}")
    if max_response_length < buffer_len:
        raise ValueError(f"max_response_length {max_response_length} must be >= buffer_len {buffer_len}")


def overlong_penalty(
    length: int, max_response_length: int = 10000, buffer_len: int = 1000, factor: float = 1.0
) -> np.float32:
    """The (float32, <= 0) penalty for a response of `length` valid tokens."""
    _check(max_response_length, buffer_len)
    exceed = np.float32(length - (max_response_length - buffer_len))
    penalty = -exceed / np.float32(buffer_len) * np.float32(factor)
    return penalty if penalty < 0 else np.float32(0.0)


def shape_reward(
    score: float, length: int, max_response_length: int = 10000, buffer_len: int = 1000, factor: float = 1.0
) -> np.float32:
    """score + penalty, rounded to float32 (the value the reference stores)."""
    return np.float32(score) + overlong_penalty(length, max_response_length, buffer_len, factor)


def shape_rewards(
    scores_B: Sequence[float],
    lengths_B: Sequence[int],
    width: int,
    max_response_length: int = 10000,
    buffer_len: int = 1000,
    factor: float = 1.0,
) -> np.ndarray:
    """Token-level rewards [B, width] float32: score + penalty at index L - 1, zeros elsewhere."""
    score_B = np.asarray(scores_B, dtype=np.float32)
    length_B = np.asarray(lengths_B, dtype=np.int64)
    if score_B.ndim != 1 or score_B.shape != length_B.shape:
        raise ValueError(f"scores_B {score_B.shape} and lengths_B {length_B.shape} must be equal 1-D shapes")
    if length_B.size and (length_B.min() < 1 or length_B.max() > width):
        raise ValueError(f"lengths_B must lie in [1, width={width}], got {length_B.tolist()}")
    _check(max_response_length, buffer_len)
    exceed_B = (length_B - (max_response_length - buffer_len)).astype(np.float32)
    penalty_B = np.minimum(-exceed_B / np.float32(buffer_len) * np.float32(factor), np.float32(0.0))
    rewards_BW = np.zeros((score_B.shape[0], width), dtype=np.float32)
    rewards_BW[np.arange(score_B.shape[0]), length_B - 1] = score_B + penalty_B
    return rewards_BW
