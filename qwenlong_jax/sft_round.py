"""One supervised (SFT warm-up) step: encode the records, pack them into rows, update.

Rows are padded to a power of two (rounded to the batch axes and micro-batch), so a phase
compiles for few distinct shapes; plan.sft_shapes prices the worst case.
"""
from __future__ import annotations

import jax
import numpy as np

from qwenlong_jax import sharding
from qwenlong_jax.config import PhaseConfig
from qwenlong_jax.data.sft import encode_sft
from qwenlong_jax.rl import packing
from qwenlong_jax.rl.sft_step import pack_sft_rows
from qwenlong_jax.run_context import JittedSteps, RunContext


def sft_step(ctx: RunContext, steps: JittedSteps, state, recs, phase: PhaseConfig):
    """(new state, metrics) after one SFT update on `recs`."""
    examples = []
    for r in recs:
        ids, mask = encode_sft(r, ctx.tok)
        n_prompt = mask.index(1)
        examples.append((ids[:n_prompt], ids[n_prompt:]))
    W = packing.round_up(phase.max_input + phase.max_output, 64)
    rows = pack_sft_rows(examples, W)
    batch_axes = sharding.batch_axis_size(ctx.mesh)
    n = max(len(rows["tokens_BW"]), 1)
    target = packing.round_up(1 << (n - 1).bit_length(), batch_axes)  # few distinct shapes
    micro = phase.micro_rows or target
    target = packing.round_up(target, micro)
    rows = {k: np.pad(v, ((0, target - len(v)), (0, 0))) for k, v in rows.items()}
    batch = {k: v.reshape(target // micro, micro, W) for k, v in rows.items()}  # [U, rows, W]
    with jax.set_mesh(ctx.mesh):
        state, m = steps.sft(state, jax.device_put(batch, steps.rows_sharding(1, 1)))
    m = jax.device_get(m)
    return state, {"sft/nll": m["nll"], "sft/token_acc": m["token_acc"], "loss": m["loss"],
                   "grad_norm": m["grad_norm"], "skipped": m["skipped"]}
