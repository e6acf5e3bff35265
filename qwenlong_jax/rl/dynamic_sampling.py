"""DAPO dynamic sampling, on the host (numpy): drop zero-variance groups, refill across rounds.

    ds = DynamicSampler(target_groups=128, group_size=8, max_rounds=10)
    while ds.needs_more:
        batch = generate_and_score(...)             # dict of arrays, leading axis N = groups * G
        ds = ds.add_round(batch, batch["acc"])      # metric: acc (score == 1) or the score
    train_batch, stats = ds.finish()                # <= target_groups * G samples, groups whole

Follows verl's DAPO trainer (`algorithm.filter_groups`): per round, a group (G contiguous samples
of one prompt) is kept when its metric varies (verl: np.std > 0) or it has a single sample; kept
groups are concatenated across rounds in arrival order, and once at least `target_groups` are
kept the batch is cut to exactly `target_groups * G` samples (the surplus is discarded, as verl's
`batch[:traj_bsz]`). `max_rounds <= 0` means no cap, as verl's `max_num_gen_batches`.

Departures, on purpose:
- "Varies" is max != min, not np.std > 0: the same for 0/1 accuracies, but for float scores np.std
  of copies of one value can be a round-off > 0 (three copies of 0.1 give ~1.4e-17; not for G=8)
  and verl would keep such a group, which carries no signal (its advantages are 0).
- When the round cap is hit with a partial batch, verl raises ValueError ("Generated too many").
  We train on what we have: `needs_more` turns False, `finish()` returns the kept groups (possibly
  fewer than target_groups, possibly none) and reports `partial=1` and how many groups were short.
  The caller must handle a smaller (or empty) batch, e.g. pad it to a fixed shape or skip the step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

Batch = Mapping[str, np.ndarray]


def varying_groups(metric_N: np.ndarray, group_size: int) -> np.ndarray:
    """bool [N // G]: which contiguous groups of G have a non-constant metric (or G == 1)."""
    metric_N = np.asarray(metric_N)
    if metric_N.ndim != 1:
        raise ValueError(f"metric_N must be 1-D [N], got shape {metric_N.shape}")
    if group_size < 1 or metric_N.shape[0] % group_size:
        raise ValueError(f"metric_N has {metric_N.shape[0]} entries, not a multiple of group_size={group_size}")
    metric_NgG = metric_N.astype(np.float64).reshape(-1, group_size)
    if not np.all(np.isfinite(metric_NgG)):
        raise ValueError("metric_N has non-finite entries; scores must be finite")
    if group_size == 1:
        # verl keeps single-sample groups (there is no variance to speak of).
        return np.ones(metric_NgG.shape[0], dtype=bool)
    return metric_NgG.max(axis=1) != metric_NgG.min(axis=1)


@dataclasses.dataclass(frozen=True)
class DynamicSampler:
    """Immutable accumulator of kept groups across rounds; add_round returns a new one."""

    target_groups: int  # train batch size in prompts (groups)
    group_size: int  # G, responses per prompt
    max_rounds: int = 10  # generation rounds per step; <= 0: no cap
    kept: tuple[dict[str, np.ndarray], ...] = ()  # one dict of kept samples per round
    rounds: int = 0
    generated_groups: int = 0
    kept_groups: int = 0
    filtered_groups: int = 0

    def __post_init__(self):
        if self.target_groups < 1 or self.group_size < 1:
            raise ValueError(f"target_groups ({self.target_groups}) and group_size ({self.group_size}) must be >= 1")

    @property
    def full(self) -> bool:
        return self.kept_groups >= self.target_groups

    @property
    def capped(self) -> bool:
        return self.max_rounds > 0 and self.rounds >= self.max_rounds

    @property
    def needs_more(self) -> bool:
        """True while another generation round should run."""
        return not self.full and not self.capped

    def add_round(self, batch: Batch, metric_N: np.ndarray) -> DynamicSampler:
        """Keep this round's varying groups of `batch` (every array has leading axis N)."""
        if not self.needs_more:
            raise ValueError(
                f"add_round after the batch is done (kept {self.kept_groups}/"
                f"{self.target_groups} groups, round {self.rounds}/{self.max_rounds})"
            )
        if self.kept and set(batch) != set(self.kept[0]):
            raise ValueError(f"batch keys {sorted(batch)} differ from the first round's {sorted(self.kept[0])}")
        keep_Ng = varying_groups(metric_N, self.group_size)
        n = keep_Ng.shape[0] * self.group_size
        for key, value in batch.items():
            if np.shape(value)[:1] != (n,):
                raise ValueError(f"batch[{key!r}] has shape {np.shape(value)}, need leading axis N={n} (as metric_N)")
        keep_N = np.repeat(keep_Ng, self.group_size)
        kept = {key: np.asarray(value)[keep_N] for key, value in batch.items()}
        num_kept = int(keep_Ng.sum())
        return dataclasses.replace(
            self,
            kept=self.kept + (kept,),
            rounds=self.rounds + 1,
            generated_groups=self.generated_groups + keep_Ng.shape[0],
            kept_groups=self.kept_groups + num_kept,
            filtered_groups=self.filtered_groups + keep_Ng.shape[0] - num_kept,
        )

    def finish(self) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """(train batch of min(kept, target) whole groups in arrival order, stats)."""
        if not self.kept:
            raise ValueError("finish() before any add_round: nothing was generated")
        used = min(self.kept_groups, self.target_groups)
        n = used * self.group_size
        batch = {key: np.concatenate([r[key] for r in self.kept], axis=0)[:n] for key in self.kept[0]}
        stats = {
            "dynamic_sampling/rounds": float(self.rounds),
            "dynamic_sampling/generated_groups": float(self.generated_groups),
            "dynamic_sampling/kept_groups": float(self.kept_groups),
            "dynamic_sampling/filtered_groups": float(self.filtered_groups),
            "dynamic_sampling/surplus_groups": float(self.kept_groups - used),
            "dynamic_sampling/short_groups": float(self.target_groups - used),
            "dynamic_sampling/partial": float(used < self.target_groups),
        }
        return batch, stats
