"""Where a run stands: a typed, immutable record of its progress, saved with each checkpoint.

The checkpoint stores it as a JSON dict (`to_meta`/`from_meta`, keys unchanged), so checkpoints
written before this record existed restore the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Progress:
    phase_index: int = 0  # the phase being trained (== len(phases) once the run is done)
    phase_step: int = 0  # steps done within that phase
    step: int = 0  # steps done in the run (as of the last checkpoint; the loop counts the live one)
    phase_data: dict | None = None  # the phase's data iterator (PhaseData.state()); None at a phase's start
    difficulty: dict | None = None  # Difficulty.state(); None before the first checkpoint
    evals: tuple[dict, ...] = ()  # held-out evaluations so far, oldest first

    def next_phase(self) -> Progress:
        return dataclasses.replace(self, phase_index=self.phase_index + 1, phase_step=0, phase_data=None)

    def to_meta(self) -> dict[str, Any]:
        """The checkpoint's JSON `meta` (the dict the trainer has always saved)."""
        return {
            "phase_index": self.phase_index,
            "phase_step": self.phase_step,
            "step": self.step,
            "phase_data": self.phase_data,
            "difficulty": self.difficulty,
            "evals": list(self.evals),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Progress:
        return cls(
            phase_index=int(meta["phase_index"]),
            phase_step=int(meta["phase_step"]),
            step=int(meta["step"]),
            phase_data=meta["phase_data"],
            difficulty=meta["difficulty"],
            evals=tuple(meta["evals"]),
        )
