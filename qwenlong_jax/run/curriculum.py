"""Phases, progressive context scaling and difficulty-aware retrospective sampling.

* Phase k trains on the examples whose prompt length (tokens, chat template included) lies
  in (min_input, max_input] of that phase (docs/recipe.md: (L_{k-1}, L_k]).
* Every RL rollout updates a per-example reward history (`Difficulty`). An example whose
  mean reward is at or below `hard_threshold` (0 by default: never solved) is *hard*.
  The reference carried such examples into the next phase offline; we do it online: when a
  phase with `retrospective=True` starts, the hard examples of earlier phases form its hard
  pool, and each batch draws up to `hard_fraction` of its prompts from it, with probability
  proportional to difficulty = 1 / p, p = (successes + 1) / (attempts + 2) the example's success
  rate over every response it was given (the paper's 1 / mean reward, with one success and one
  failure added so that a never-solved example has a finite difficulty that grows with each
  failed attempt), clipped to `max_weight`. The drawn hard prompts are put at seeded random
  positions among the fresh ones, so the step's keep-the-first-B cut of the valid groups falls
  on hard and fresh prompts alike.
* Phase data order comes from a grain iterator (seeded shuffle, a new permutation per epoch,
  each example exactly once per epoch, per-process shard); its state is checkpointed.

Everything here is host-side Python with JSON-serialisable state, saved with each checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from grain.sharding import ShardOptions

from qwenlong_jax.config import PhaseConfig, PhaseKind, RetroConfig
from qwenlong_jax.data.pipeline import make_iterator
from qwenlong_jax.data.schema import Record


def phase_records(records: Sequence[Record], phase: PhaseConfig) -> list[Record]:
    """The records whose prompt length lies in (min_input, max_input]."""
    out = []
    for r in records:
        if r.num_prompt_tokens is None:
            raise ValueError(f"{r.source or r.id}: record has no token length (load it with a tokenizer)")
        if phase.min_input < r.num_prompt_tokens <= phase.max_input:
            out.append(r)
    return out


@dataclasses.dataclass
class Difficulty:
    """Per-example reward history: id -> [sum of group-mean rewards, visits]."""

    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def update(self, ids: Sequence[str], mean_rewards: Sequence[float]) -> None:
        for i, r in zip(ids, mean_rewards):
            h = self.history.setdefault(i, [0.0, 0])
            h[0] += float(r)
            h[1] += 1

    def mean(self, i: str) -> float | None:
        h = self.history.get(i)
        return None if h is None else h[0] / h[1]

    def hard(self, ids: Sequence[str], threshold: float) -> list[str]:
        return [i for i in ids if (m := self.mean(i)) is not None and m <= threshold]

    def weights(self, ids: Sequence[str], max_weight: float, group_size: int) -> np.ndarray:
        """Sampling weight of each id: difficulty = 1 / p, clipped to max_weight, with
        p = (successes + 1) / (attempts + 2) over its `group_size` responses per visit (module
        docstring); an id never seen gets max_weight."""
        w = []
        for i in ids:
            h = self.history.get(i)
            if h is None:
                w.append(max_weight)
                continue
            p = (h[0] * group_size + 1.0) / (h[1] * group_size + 2.0)
            w.append(min(1.0 / p, max_weight))
        return np.asarray(w, np.float64)

    def state(self) -> dict:
        return {"history": self.history}

    @classmethod
    def from_state(cls, state: dict) -> Difficulty:
        return cls({k: list(v) for k, v in state["history"].items()})


class PhaseData:
    """Batches of records for one phase: its own examples in epoch order (grain), plus up to
    `hard_fraction` of each batch from the hard pool of earlier phases, shuffled in."""

    def __init__(
        self,
        records: Sequence[Record],
        hard_pool: Sequence[Record],
        phase: PhaseConfig,
        retro: RetroConfig,
        seed: int,
        shard: ShardOptions | None = None,
        gather: Callable[[np.ndarray], np.ndarray] | None = None,
        group_size: int = 8,
    ):
        """shard: iterate only this shard of the phase's examples (multi-host: grain's
        ShardByJaxProcess, `data.pipeline.process_shard()`). With several shards each process
        draws batch/shard_count of the phase's own examples per batch, and `gather` (an
        all-gather across processes, [n] -> [shard_count, n]) assembles the global batch in
        process order, so every process holds the same batch; the hard-pool draw is seeded and
        identical everywhere. The shard count must divide the batch; the hard count is rounded
        down to a multiple of it. group_size: responses per prompt (rl.group_size), the attempts
        a visit adds to an example's difficulty."""
        if not records:
            raise ValueError(
                f"phase {phase.name!r}: no examples with prompt length in ({phase.min_input}, {phase.max_input}] tokens"
            )
        self.records = list(records)
        self.hard_pool = list(hard_pool) if phase.retrospective else []
        self.phase, self.retro, self.seed = phase, retro, seed
        self._it = make_iterator(list(range(len(self.records))), seed=seed, num_epochs=None, shard=shard)
        self.draws = 0  # batches drawn (seeds the hard-pool draw)
        self.processes = shard.shard_count if shard is not None else 1
        if self.processes > 1 and gather is None:
            raise ValueError("PhaseData: several shards need a gather function")
        self.gather = gather
        self.group_size = group_size

    def num_hard(self, batch: int) -> int:
        k = min(len(self.hard_pool), int(self.retro.hard_fraction * batch))
        return k - k % self.processes

    def next_batch(self, batch: int, difficulty: Difficulty) -> tuple[list[Record], np.ndarray]:
        """(records, hard_B: which of them come from the hard pool). The fresh prompts come in
        epoch order; the hard ones sit at seeded random positions among them (the same on every
        process), so no position -- in particular not the tail a surplus cut drops -- is
        reserved for either kind."""
        k = self.num_hard(batch)
        if (batch - k) % self.processes:
            raise ValueError(f"batch {batch} does not split over {self.processes} processes")
        local = [next(self._it) for _ in range((batch - k) // self.processes)]
        if self.processes > 1:
            assert self.gather is not None  # required with more than one process (__init__)
            local = self.gather(np.asarray(local, np.int64)).reshape(-1).tolist()
        recs = [self.records[i] for i in local]
        if k:
            rng = np.random.default_rng([self.seed, 7, self.draws])
            ids = [r.id for r in self.hard_pool]
            w = difficulty.weights(ids, self.retro.max_weight, self.group_size)
            pick = rng.choice(len(ids), size=k, replace=False, p=w / w.sum())
            recs += [self.hard_pool[i] for i in sorted(pick)]
        hard_B = np.zeros(len(recs), bool)
        if k:  # the hard prompts at random positions, the fresh ones in epoch order around them
            slots = np.random.default_rng([self.seed, 11, self.draws]).choice(len(recs), k, replace=False)
            hard_B[slots] = True
            fresh, hard = iter(recs[: len(recs) - k]), iter(recs[len(recs) - k :])
            recs = [next(hard) if h else next(fresh) for h in hard_B]
        self.draws += 1
        return recs, hard_B

    def state(self) -> dict:
        return {"iterator": self._it.get_state(), "draws": self.draws, "hard_ids": [r.id for r in self.hard_pool]}

    def restore(self, state: dict, by_id: dict[str, Record]) -> None:
        self._it.set_state(state["iterator"])
        self.draws = state["draws"]
        self.hard_pool = [by_id[i] for i in state["hard_ids"]]


def hard_pool_for(
    phase_index: int,
    phases: Sequence[PhaseConfig],
    per_phase: Sequence[Sequence[Record]],
    difficulty: Difficulty,
    retro: RetroConfig,
) -> list[Record]:
    """Hard examples from the earlier RL phases (by their reward history)."""
    pool = []
    for k in range(phase_index):
        if phases[k].kind != PhaseKind.RL:
            continue
        ids = set(difficulty.hard([r.id for r in per_phase[k]], retro.hard_threshold))
        pool += [r for r in per_phase[k] if r.id in ids]
    return pool
