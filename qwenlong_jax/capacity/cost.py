"""Per-chip counts of one program run and the time they take on a chip (`estimate`).

Time per bound = count / the chip's published peak (capacity/chips.py); the estimate is the
largest of the three (compute, memory and communication assumed to overlap perfectly), so it is
a LOWER bound on the step time of the program on that chip.
"""

from __future__ import annotations

import dataclasses

from qwenlong_jax.capacity.chips import Chip


@dataclasses.dataclass
class Cost:
    """Per-chip counts of one program run, loop bodies times their trip counts."""

    flops: float = 0.0
    hbm_bytes: float = 0.0
    collective_bytes: float = 0.0
    assumed: list[str] = dataclasses.field(default_factory=list)  # loops with a guessed trip count

    def __add__(self, o: Cost) -> Cost:
        return Cost(
            self.flops + o.flops,
            self.hbm_bytes + o.hbm_bytes,
            self.collective_bytes + o.collective_bytes,
            self.assumed + o.assumed,
        )

    def scaled(self, k: float) -> Cost:
        return Cost(self.flops * k, self.hbm_bytes * k, self.collective_bytes * k, self.assumed)


@dataclasses.dataclass(frozen=True)
class Estimate:
    compute_s: float
    hbm_s: float
    collective_s: float

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.hbm_s, self.collective_s)

    @property
    def bound(self) -> str:
        return max((self.compute_s, "compute"), (self.hbm_s, "hbm"), (self.collective_s, "ici"))[1]


def estimate(cost: Cost, chip: Chip) -> Estimate:
    return Estimate(
        cost.flops / chip.flops_per_s,
        cost.hbm_bytes / chip.hbm_bytes_per_s,
        cost.collective_bytes / chip.ici_bytes_per_s,
    )
