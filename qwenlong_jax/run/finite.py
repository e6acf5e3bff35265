"""The run's guard against non-finite numbers: a run never checkpoints, exports or reports
"done" from non-finite parameters, and stops (with a checkpoint) after K non-finite steps.

    check_params_finite(state, step, saved_step, workdir)   # at every save
    check_nonfinite_steps(state, limit, workdir, save)      # after every step
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


class TrainingError(RuntimeError):
    """A run that cannot go on (e.g. K non-finite steps in a row); a checkpoint was written."""


@jax.jit
def all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def check_params_finite(state, step: int, saved_step: int | None, workdir: str) -> None:
    """TrainingError (one line, naming the latest checkpoint, which is finite: every save is
    checked) when a parameter is nan or inf. The update skips a non-finite loss or gradient,
    but an update of finite numbers can still overflow the parameters."""
    if bool(jax.device_get(all_finite(state.params))):
        return
    raise TrainingError(
        f"the parameters are not finite at step {step} (an update overflowed: e.g. too large an optim.lr "
        f"or phase lr); nothing from step {step} was saved or exported, and the last finite parameters are "
        + (
            f"checkpoint step {saved_step} in {workdir}/checkpoints"
            if saved_step is not None
            else "the initial ones (no checkpoint was written)"
        )
        + "; lower the learning rate and start again in a new --workdir"
    )


def check_nonfinite_steps(state, limit: int, workdir: str, save) -> float:
    """The run's count of non-finite steps so far; at `limit` in a row, save() the last good
    state and raise TrainingError."""
    bad = int(jax.device_get(state.nonfinite_in_a_row))
    total = float(jax.device_get(state.nonfinite_total))
    if bad >= limit:
        save()
        raise TrainingError(
            f"{bad} non-finite losses/gradients in a row (optim.max_nonfinite_in_a_row={limit}); the last good "
            f"state is checkpointed in {workdir}/checkpoints. Lower optim.lr or check the data, and start again "
            "in a new --workdir (a rerun here stops at once: the checkpoint is over the limit)."
        )
    return total
