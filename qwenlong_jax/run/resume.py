"""Where a run starts: its latest checkpoint, restored straight into the run's layout (the
RunSpec's abstract state) before model.init_from is read, or else a fresh state.

    start = begin(ctx, ckpt, quiet=False)   # Start: state, progress, saved_step, done

A restored state that cannot make progress ends the run here, in one line, instead of looping.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax

from qwenlong_jax import paths
from qwenlong_jax.config import PhaseKind
from qwenlong_jax.run.checkpoint import Checkpointer
from qwenlong_jax.run.context import RunContext
from qwenlong_jax.run.curriculum import Difficulty
from qwenlong_jax.run.finite import TrainingError, all_finite
from qwenlong_jax.run.progress import Progress
from qwenlong_jax.run.schedule import phase_steps
from qwenlong_jax.run.spec import Reference
from qwenlong_jax.run.state import init_state, reference


@dataclasses.dataclass(frozen=True)
class Start:
    state: Any  # TrainState
    progress: Progress
    saved_step: int | None  # the checkpoint restored, None for a fresh start
    done: dict | None = None  # the summary of a run that had already finished: nothing to do


def begin(ctx: RunContext, ckpt: Checkpointer, *, quiet: bool = False) -> Start:
    """The latest checkpoint that restores (model.init_from is not read then), else init_state."""
    restored = restore(ctx, ckpt)
    if restored is None:
        return Start(init_state(ctx), Progress(difficulty=Difficulty().state()), None)
    step, state, meta = restored
    progress, done = resume_check(ctx, state, Progress.from_meta(meta), quiet=quiet)
    return Start(state, progress, step, done)


def restore(ctx: RunContext, ckpt: Checkpointer):
    """(step, state, meta) of restore_latest into the run's layout, with the KL reference
    reconciled when the checkpoint was written with another rl.kl_coef: a reference the run no
    longer uses is dropped; a missing one is rebuilt where the run can (rl.ref_from, or the
    resumed phase takes its reference at its start anyway), and otherwise the run stops in one
    line instead of treating every checkpoint as unreadable and starting over. None: nothing
    restored."""
    spec, target = ctx.spec, ctx.spec.abstract_state
    saved = ckpt.steps()
    saved_ref = ckpt.has_state_field(saved[-1], "ref_params") if saved else None
    if saved_ref is None or saved_ref == spec.holds_reference:
        return ckpt.restore_latest(target)
    restored = ckpt.restore_latest(target.replace(ref_params=target.params if saved_ref else None))
    if restored is None:
        return None
    step, rstate, meta = restored
    if not spec.holds_reference:  # rl.kl_coef is 0 now
        return step, rstate.replace(ref_params=None), meta
    cfg, progress = ctx.cfg, Progress.from_meta(meta)
    mid_rl_phase = (
        progress.phase_index < len(cfg.phases)
        and progress.phase_step > 0
        and cfg.phases[progress.phase_index].kind == PhaseKind.RL
    )
    if mid_rl_phase and spec.reference == Reference.PHASE_START:
        raise TrainingError(
            f"the checkpoint at step {step} in {ctx.workdir}/checkpoints was written with rl.kl_coef=0, "
            f"in the middle of RL phase {cfg.phases[progress.phase_index].name!r}, so it holds no KL reference "
            f"(the phase's starting policy); resume with --config.rl.kl_coef=0, or set rl.ref_from to the "
            "reference checkpoint, or start over in a new --workdir"
        )
    # The reference from rl.ref_from, or a placeholder the next RL phase's start replaces.
    return step, rstate.replace(ref_params=reference(ctx, rstate.params)), meta


def resume_check(ctx: RunContext, state, progress: Progress, *, quiet: bool) -> tuple[Progress, dict | None]:
    """A phase whose steps are all done moves on; a finished run returns its summary; a state
    with non-finite params, or already over the non-finite limit, is a TrainingError saying what
    to do."""
    cfg, workdir = ctx.cfg, ctx.workdir
    while progress.phase_index < len(cfg.phases) and progress.phase_step >= phase_steps(
        ctx.spec.phases[progress.phase_index], len(ctx.per_phase[progress.phase_index])
    ):
        progress = progress.next_phase()
    if not bool(jax.device_get(all_finite(state.params))):
        raise TrainingError(
            f"the checkpoint at step {progress.step} in {workdir}/checkpoints holds non-finite parameters; "
            "resume from an earlier one (delete the later step directories) or start again in a new --workdir"
        )
    bad, limit = int(jax.device_get(state.nonfinite_in_a_row)), cfg.optim.max_nonfinite_in_a_row
    if bad >= limit:
        raise TrainingError(
            f"the checkpoint at step {progress.step} in {workdir}/checkpoints already ends with {bad} "
            f"non-finite steps in a row (optim.max_nonfinite_in_a_row={limit}), "
            "so resuming would stop again at once; start over in a new --workdir (e.g. with a lower "
            "optim.lr), or raise optim.max_nonfinite_in_a_row to continue from its last good params"
        )
    if progress.phase_index >= len(cfg.phases):
        spath = paths.join(workdir, "summary.json")
        if paths.exists(spath):
            if not quiet:
                print(
                    f"the run in {workdir} already finished at step {progress.step}; nothing to do "
                    "(use a new --workdir to train again)"
                )
            return progress, {**json.loads(paths.read_text(spath)), "already_finished": True}
    return progress, None
