"""The shapes every jitted step compiles for. run/spec.py computes them once per phase (the
RunSpec); the trainer, the planner and the compile check read them from there.

    PREFILL_CHUNK                     prompt tokens per prefill step
    prompt_bucket(phase)              S, the padded prompt length of a phase
    rl_step_shapes(phase, rl)         RLStepShapes: B, G, S, R, W, rows, updates, micro, ...
    sft_row_width(phase)              W, the packed SFT row width
    sft_padded_rows(n, axes, micro)   (padded row count, rows per micro-batch) for n packed rows
    sft_step_shapes(phase, axes)      SFTStepShapes: the worst case (one example per row)
    heldout_shape(L, per_length, axes)  (B, S) of generating a synthetic held-out set
"""

from __future__ import annotations

import dataclasses

from qwenlong_jax.config import PhaseConfig, RLConfig
from qwenlong_jax.data.run_data import HELDOUT_PROMPT_OVERHEAD
from qwenlong_jax.sampling import sampler

PREFILL_CHUNK = 512  # prompt tokens per prefill step; prompts are padded to a multiple of it
ROW_MULTIPLE = 64  # packed rows (RL and SFT) are rounded up to a multiple of this
HELDOUT_BATCH = 16  # held-out prompts per sampling call (eval.sweep.accuracy_by_length's batch_size)


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def prompt_bucket(phase: PhaseConfig, prefill_chunk: int = PREFILL_CHUNK) -> int:
    return sampler.bucket_length(phase.max_input, prefill_chunk)


@dataclasses.dataclass(frozen=True)
class RLStepShapes:
    """The shapes one RL step compiles for (the trainer builds them, the planner prices them).

    B prompts x G responses; prompts padded to S, responses capped at R; each group packed into
    one row of W = S + G*R (rounded to 64); `updates` optimizer updates of `micro` micro-batches
    of `rows` groups (per PPO epoch); `gen_B` prompts per generation round (DAPO), sampled
    `sample_B` prompts per sampling call."""

    B: int
    G: int
    S: int
    R: int
    W: int
    rows: int
    updates: int
    micro: int
    sample_B: int
    gen_B: int


def rl_step_shapes(phase: PhaseConfig, rl: RLConfig, prefill_chunk: int = PREFILL_CHUNK) -> RLStepShapes:
    G, R, B = rl.group_size, phase.max_output, phase.batch
    S = prompt_bucket(phase, prefill_chunk)
    mini = min(rl.mini_batch, B)
    micro = rl.micro_batch or mini
    return RLStepShapes(
        B=B,
        G=G,
        S=S,
        R=R,
        W=_round_up(S + G * R, ROW_MULTIPLE),
        rows=micro,
        updates=B // mini,
        micro=mini // micro,
        sample_B=rl.rollout_batch or rl.gen_batch or B,
        gen_B=rl.gen_batch or B,
    )


@dataclasses.dataclass(frozen=True)
class SFTStepShapes:
    """One SFT update: `micro` micro-batches of `rows` packed rows of W tokens."""

    W: int
    rows: int
    micro: int


def sft_row_width(phase: PhaseConfig) -> int:
    """W of a packed SFT row: the longest example (prompt + response), rounded to 64."""
    return _round_up(phase.max_input + phase.max_output, ROW_MULTIPLE)


def sft_padded_rows(n_rows: int, batch_axes: int, micro_rows: int = 0) -> tuple[int, int]:
    """(rows after padding, rows per micro-batch) for n_rows packed rows: padded to a power of
    two (so a phase compiles for few distinct shapes), rounded to the batch axes, then to the
    micro-batch (micro_rows, or all rows in one)."""
    target = _round_up(1 << (max(n_rows, 1) - 1).bit_length(), batch_axes)
    micro = micro_rows or target
    return _round_up(target, micro), micro


def sft_step_shapes(phase: PhaseConfig, batch_axes: int) -> SFTStepShapes:
    """The worst case of an SFT step: one example per packed row (phase.batch rows)."""
    total, micro = sft_padded_rows(phase.batch, batch_axes, phase.micro_rows)
    return SFTStepShapes(W=sft_row_width(phase), rows=micro, micro=total // micro)


def heldout_shape(length: int, per_length: int, batch_axes: int) -> tuple[int, int]:
    """(B, S) of one sampling call over the synthetic held-out set of `length`-token documents:
    B prompts (the eval batch, padded to the mesh's batch axes), padded to S tokens (the bucket of
    the document plus its prompt around it). The planner prices and the compile check compiles
    exactly this."""
    B = _round_up(min(HELDOUT_BATCH, per_length), batch_axes)
    return B, sampler.bucket_length(length + HELDOUT_PROMPT_OVERHEAD, PREFILL_CHUNK)
