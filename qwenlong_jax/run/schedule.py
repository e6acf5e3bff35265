"""How long each phase runs and its learning rate at each step.

n = phase_steps(ps, num_records)           # `steps`, else `epochs` passes over the examples
lr = phase_lr(cfg, phase, phase_step, n)   # optim.schedule: warmup, then constant or cosine
"""

from __future__ import annotations

import math

from qwenlong_jax.config import Config, PhaseConfig
from qwenlong_jax.run.spec import PhaseSpec
from qwenlong_jax.run.step_shapes import RLStepShapes


def phase_steps(ps: PhaseSpec, num_records: int) -> int:
    """A phase's steps: `steps`, else `epochs` passes over its examples. An SFT step takes
    `batch` examples; an RL step generates for one generation batch (rl.gen_batch, or the phase
    batch), and epochs count those, as the reference counts them (docs/recipe.md)."""
    phase = ps.phase
    if phase.steps:
        return phase.steps
    per_step = ps.shapes.gen_B if isinstance(ps.shapes, RLStepShapes) else phase.batch  # RL phases have RL shapes
    return max(1, math.ceil(phase.epochs * num_records / per_step))


def phase_lr(cfg: Config, phase: PhaseConfig, phase_step: int, n_steps: int) -> float:
    """optim.schedule within a phase: linear warmup, then constant or cosine to 10%."""
    o = cfg.optim
    lr = phase.lr or o.lr
    if o.warmup_steps and phase_step < o.warmup_steps:
        return lr * (phase_step + 1) / o.warmup_steps
    if o.schedule == "cosine":
        frac = (phase_step - o.warmup_steps) / max(n_steps - o.warmup_steps, 1)
        return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0))))
    return lr
