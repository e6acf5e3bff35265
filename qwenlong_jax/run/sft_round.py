"""One supervised (SFT warm-up) step in three parts, so that the loop can prepare the next
step's input while this one runs on the devices:

    batch = sft_batch(ctx, steps, recs, ps)                   # host: encode, pack; sent to the devices
    state, pending = sft_update(ctx, steps, state, batch)     # dispatched, not waited for
    metrics = sft_metrics(pending)                            # read back (waits for the step)

Rows are W wide (the phase's SFTStepShapes, from the RunSpec) and padded to a power of two
(rounded to the batch axes and micro-batch), so a phase compiles for few distinct shapes
(step_shapes.sft_padded_rows); the planner prices the worst case (step_shapes.sft_step_shapes).
"""

from __future__ import annotations

import jax
import numpy as np

from qwenlong_jax.data.sft import encode_sft
from qwenlong_jax.rl.sft_step import pack_sft_rows
from qwenlong_jax.run import step_shapes
from qwenlong_jax.run.context import RunContext
from qwenlong_jax.run.spec import PhaseSpec
from qwenlong_jax.run.state import JittedSteps


def sft_batch(ctx: RunContext, steps: JittedSteps, recs, ps: PhaseSpec) -> dict:
    """`recs` encoded, packed into rows [U, rows, W] and put on the devices (asynchronously)."""
    examples = []
    for r in recs:
        ids, mask = encode_sft(r, ctx.tok)
        n_prompt = mask.index(1)
        examples.append((ids[:n_prompt], ids[n_prompt:]))
    W = ps.shapes.W
    rows = pack_sft_rows(examples, W)
    target, micro = step_shapes.sft_padded_rows(len(rows["tokens_BW"]), ctx.spec.batch_axes, ps.phase.micro_rows)
    rows = {k: np.pad(v, ((0, target - len(v)), (0, 0))) for k, v in rows.items()}
    batch = {k: v.reshape(target // micro, micro, W) for k, v in rows.items()}  # [U, rows, W]
    with jax.set_mesh(ctx.mesh):
        return jax.device_put(batch, steps.rows_sharding(1, 1))


def sft_update(ctx: RunContext, steps: JittedSteps, state, batch: dict):
    """(new state, the step's metrics on the devices): the update is dispatched, not waited for."""
    with jax.set_mesh(ctx.mesh):
        return steps.sft(state, batch)


def sft_metrics(pending) -> dict:
    """The step's metrics on the host (waits for the step to finish)."""
    m = jax.device_get(pending)
    return {
        "sft/nll": m["nll"],
        "sft/token_acc": m["token_acc"],
        "loss": m["loss"],
        "grad_norm": m["grad_norm"],
        "skipped": m["skipped"],
    }
