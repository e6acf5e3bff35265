"""DAPO dynamic sampling: group filter, accumulation across rounds, the round cap."""

from collections import defaultdict

import numpy as np
import pytest

from qwenlong_jax import rl


def verl_filter_round(uids, metric_vals):
    """Transcription of the group filter in verl's DAPO trainer (recipe/dapo, fit()):
    returns the kept trajectory indices of one generation round."""
    prompt_uid2metric_vals = defaultdict(list)
    for uid, metric_val in zip(uids, metric_vals):
        prompt_uid2metric_vals[uid].append(metric_val)
    prompt_uid2metric_std = {}
    for prompt_uid, metric_vals_ in prompt_uid2metric_vals.items():
        prompt_uid2metric_std[prompt_uid] = np.std(metric_vals_)
    kept_prompt_uids = [
        uid for uid, std in prompt_uid2metric_std.items() if std > 0 or len(prompt_uid2metric_vals[uid]) == 1
    ]
    kept_traj_idxs = []
    for idx, traj_from_prompt_uid in enumerate(uids):
        if traj_from_prompt_uid in kept_prompt_uids:
            kept_traj_idxs.append(idx)
    return kept_traj_idxs, len(kept_prompt_uids)


def _round(group_accs, g, offset=0):
    """A generation round: groups given as their accuracies; ids tell samples apart."""
    acc = np.asarray(group_accs, np.float32).reshape(-1)
    n = acc.shape[0]
    return {
        "acc": acc,
        "sample_id": np.arange(offset, offset + n),
        "tokens": np.arange(offset, offset + n)[:, None] * np.ones((1, 3), np.int32),
    }


def test_varying_groups():
    # G = 4: [1,1,0,0] varies, [1,1,1,1] and [0,0,0,0] don't; a float group that varies by 0.1.
    acc = np.array([1, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0.3, 0.3, 0.3, 0.4])
    np.testing.assert_array_equal(rl.varying_groups(acc, 4), [True, False, False, True])
    # G = 1: every group is kept, as verl does.
    np.testing.assert_array_equal(rl.varying_groups(np.array([1.0, 1.0]), 1), [True, True])
    with pytest.raises(ValueError, match="multiple of group_size=4"):
        rl.varying_groups(np.zeros(6), 4)
    with pytest.raises(ValueError, match="non-finite"):
        rl.varying_groups(np.array([0.0, np.nan]), 2)


def test_matches_verl_filter_on_random_rounds():
    rng = np.random.default_rng(0)
    g = 8
    for _ in range(5):
        acc = (rng.uniform(size=(24, 1)) < rng.uniform(size=(24, 1)) ** 3).astype(np.float32)
        acc = np.broadcast_to(acc, (24, g)).copy()
        flip = rng.uniform(size=(24, g)) < 0.05
        acc[flip] = 1 - acc[flip]
        acc = acc.reshape(-1)
        uids = np.repeat(np.array([f"uid-{i}" for i in range(24)]), g)
        kept_idx, num_kept = verl_filter_round(list(uids), list(acc))
        keep = np.repeat(rl.varying_groups(acc, g), g)
        np.testing.assert_array_equal(np.flatnonzero(keep), kept_idx)
        assert 0 < num_kept < 24  # both outcomes occur


def test_constant_float_group_dropped_where_verl_keeps_it():
    # np.std([0.1] * 3) is a round-off 1.4e-17 > 0, so verl keeps this zero-signal group;
    # we compare values (max != min) and drop it (documented departure).
    acc = np.array([0.1, 0.1, 0.1])
    assert np.std(acc) > 0
    assert verl_filter_round(["a"] * 3, list(acc))[1] == 1
    np.testing.assert_array_equal(rl.varying_groups(acc, 3), [False])


def test_accumulates_until_full_then_truncates():
    # target 3 groups of G = 2.
    # Round 1: groups [1,0] keep, [1,1] drop, [0,1] keep   -> 2 kept (samples 0,1,4,5)
    # Round 2: groups [0,0] drop, [1,0] keep, [0,1] keep   -> 4 kept in all: full; the last is
    # surplus, so the batch is samples 0,1,4,5 of round 1 then 8,9 (round 2's second group).
    ds = rl.DynamicSampler(target_groups=3, group_size=2, max_rounds=10)
    assert ds.needs_more
    r1 = _round([[1, 0], [1, 1], [0, 1]], 2, offset=0)
    ds = ds.add_round(r1, r1["acc"])
    assert ds.needs_more and ds.kept_groups == 2 and ds.filtered_groups == 1
    r2 = _round([[0, 0], [1, 0], [0, 1]], 2, offset=6)
    ds = ds.add_round(r2, r2["acc"])
    assert not ds.needs_more and ds.full
    batch, stats = ds.finish()
    np.testing.assert_array_equal(batch["sample_id"], [0, 1, 4, 5, 8, 9])
    np.testing.assert_array_equal(batch["tokens"][:, 0], [0, 1, 4, 5, 8, 9])
    assert batch["tokens"].shape == (6, 3)
    assert stats == {
        "dynamic_sampling/rounds": 2.0,
        "dynamic_sampling/generated_groups": 6.0,
        "dynamic_sampling/kept_groups": 4.0,
        "dynamic_sampling/filtered_groups": 2.0,
        "dynamic_sampling/surplus_groups": 1.0,
        "dynamic_sampling/short_groups": 0.0,
        "dynamic_sampling/partial": 0.0,
    }
    with pytest.raises(ValueError, match="add_round after the batch is done"):
        ds.add_round(r2, r2["acc"])


def test_round_cap_trains_on_partial_batch():
    # max_rounds 2, one varying group per round, target 4: after 2 rounds we stop with 2 groups
    # (verl would raise here; we return them and say the batch is 2 groups short).
    ds = rl.DynamicSampler(target_groups=4, group_size=2, max_rounds=2)
    for k in range(2):
        r = _round([[1, 1], [0, 1]], 2, offset=4 * k)
        ds = ds.add_round(r, r["acc"])
    assert ds.capped and not ds.full and not ds.needs_more
    batch, stats = ds.finish()
    np.testing.assert_array_equal(batch["sample_id"], [2, 3, 6, 7])
    assert stats["dynamic_sampling/partial"] == 1.0
    assert stats["dynamic_sampling/short_groups"] == 2.0
    assert stats["dynamic_sampling/rounds"] == 2.0


def test_everything_filtered_gives_empty_batch_with_shapes():
    ds = rl.DynamicSampler(target_groups=2, group_size=2, max_rounds=1)
    r = _round([[1, 1], [0, 0]], 2)
    batch, stats = ds.add_round(r, r["acc"]).finish()
    assert batch["tokens"].shape == (0, 3) and batch["tokens"].dtype == r["tokens"].dtype
    assert stats["dynamic_sampling/kept_groups"] == 0.0
    assert stats["dynamic_sampling/short_groups"] == 2.0


def test_no_cap_when_max_rounds_nonpositive():
    ds = rl.DynamicSampler(target_groups=1, group_size=2, max_rounds=0)
    r = _round([[1, 1]], 2)
    for _ in range(25):
        ds = ds.add_round(r, r["acc"])
    assert ds.needs_more and ds.rounds == 25 and ds.filtered_groups == 25


def test_errors():
    ds = rl.DynamicSampler(target_groups=2, group_size=2)
    r = _round([[1, 0], [0, 1]], 2)
    with pytest.raises(ValueError, match="leading axis N=4"):
        ds.add_round({"x": np.zeros(3)}, r["acc"])
    ds1 = ds.add_round({"x": np.zeros(2)}, np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="differ from the first round"):
        ds1.add_round({"y": np.zeros(2)}, np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="before any add_round"):
        ds.finish()
    with pytest.raises(ValueError, match="must be >= 1"):
        rl.DynamicSampler(target_groups=0, group_size=2)
