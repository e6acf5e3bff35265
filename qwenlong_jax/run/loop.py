"""The phase and step loops of a run: phases -> step -> eval -> metrics -> save.

    loop = Loop(ctx, steps, ckpt, writer, signals, state, progress, ...)
    stopped = run_phases(loop)      # True: a stop request ended it (checkpointed); False: all done

run_phase runs one phase: its data (curriculum.PhaseData, restored mid-phase), its KL reference
at its start, then each step (sft_round / rl_round) and finish_step: the non-finite limit, eval
when due, the metrics row, the progress bar, a checkpoint when due, a stop request (on any
process: stop.agreed). An SFT
step's successor batch is drawn, packed and sent to the devices while the step runs, and the
step's metrics are read only then: the host prepares step n+1 while the devices run step n.
Step n's results are read before step n+1 is dispatched, because step n+1 takes the state by
donation and step n may have to be checkpointed (a save, a stop request, the non-finite limit)
or evaluated. An RL step's rollouts read the devices' samples anyway.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
from tqdm import tqdm

from qwenlong_jax.config import PhaseKind
from qwenlong_jax.data.pipeline import process_shard
from qwenlong_jax.parallel import sharding
from qwenlong_jax.run.checkpoint import Checkpointer
from qwenlong_jax.run.context import RunContext, evaluate
from qwenlong_jax.run.curriculum import Difficulty, PhaseData, hard_pool_for
from qwenlong_jax.run.finite import check_nonfinite_steps, check_params_finite
from qwenlong_jax.run.metrics import MetricsWriter
from qwenlong_jax.run.progress import Progress
from qwenlong_jax.run.rl_round import rl_step
from qwenlong_jax.run.schedule import phase_lr, phase_steps
from qwenlong_jax.run.sft_round import sft_batch, sft_metrics, sft_update
from qwenlong_jax.run.spec import PhaseSpec, Reference
from qwenlong_jax.run.state import JittedSteps, reference
from qwenlong_jax.run.step_shapes import RLStepShapes
from qwenlong_jax.run.stop import agreed
from qwenlong_jax.run.train_state import TrainState, with_lr


@dataclasses.dataclass
class Loop:
    """A run in progress: what its steps read, and where it stands (updated every step)."""

    ctx: RunContext
    steps: JittedSteps
    ckpt: Checkpointer
    writer: MetricsWriter
    signals: Any  # stop.StopSignals
    state: TrainState
    progress: Progress
    step: int
    saved_step: int | None = None  # the latest checkpoint this run restored or wrote
    stop_after_steps: int | None = None  # test hook: stop (with a checkpoint) after N steps
    quiet: bool = False
    steps_this_run: int = 0
    last_update_metrics: Any = None  # the last RL update's metrics per update
    next_batch: Any = None  # the SFT batch prepared while the current step ran
    difficulty: Difficulty = dataclasses.field(init=False)

    def __post_init__(self):
        self.difficulty = Difficulty.from_state(self.progress.difficulty)

    def checkpoint_note(self) -> str:
        return checkpoint_note(self.ctx.workdir, self.saved_step)


def checkpoint_note(workdir: str, saved_step: int | None) -> str:
    if saved_step is None:
        return f"no checkpoint in {workdir}/checkpoints yet (a rerun starts at step 0)"
    return (
        f"the latest checkpoint is step {saved_step} in {workdir}/checkpoints (rerun the same "
        "command to resume from it)"
    )


def run_phases(loop: Loop) -> bool:
    """Every remaining phase; True when a stop request (or the test hook) ended the run early,
    False when the last phase finished. Either way the state is checkpointed."""
    while loop.progress.phase_index < len(loop.ctx.cfg.phases):
        if run_phase(loop):
            return True
    save(loop)
    return False


def run_phase(loop: Loop) -> bool:
    """The current phase, from where the run stands to its last step; True when stopped."""
    ctx, k = loop.ctx, loop.progress.phase_index
    ps = ctx.spec.phases[k]
    pdata = phase_data(loop, k)
    n_steps = phase_steps(ps, len(ctx.per_phase[k]))
    bar = tqdm(
        total=n_steps,
        initial=loop.progress.phase_step,
        desc=f"{ps.name} ({ps.kind})",
        disable=loop.quiet or jax.process_index() != 0,
    )
    if ps.kind == PhaseKind.RL and ctx.spec.reference == Reference.PHASE_START and loop.progress.phase_step == 0:
        loop.state = loop.state.replace(ref_params=reference(ctx, loop.state.params))  # the phase's start
    while loop.progress.phase_step < n_steps:
        t_step = time.perf_counter()
        lr = phase_lr(ctx.cfg, ps.phase, loop.progress.phase_step, n_steps)
        loop.state = with_lr(loop.state, lr)
        last = loop.progress.phase_step + 1 == n_steps
        if ps.kind == PhaseKind.SFT:
            metrics, data_state = sft_round(loop, ps, pdata, prefetch=not last)
        else:
            metrics, data_state = rl_round(loop, ps, pdata)
        loop.step += 1
        loop.steps_this_run += 1
        loop.progress = dataclasses.replace(
            loop.progress, phase_step=loop.progress.phase_step + 1, phase_data=data_state
        )
        if finish_step(loop, ps, metrics, lr, last, t_step, bar):
            return True
        if last:
            break
    bar.close()
    return False


def phase_data(loop: Loop, k: int) -> PhaseData:
    """Phase k's data order (and, for RL, its hard pool), where a restored run left it."""
    ctx, cfg = loop.ctx, loop.ctx.cfg
    phase = cfg.phases[k]
    hard = hard_pool_for(k, cfg.phases, ctx.per_phase, loop.difficulty, cfg.retro) if phase.kind == PhaseKind.RL else []
    pdata = PhaseData(
        ctx.per_phase[k],
        hard,
        phase,
        cfg.retro,
        seed=cfg.seed * 1000 + k + 1_000_003 * cfg.data.shuffle_seed,
        shard=process_shard() if jax.process_count() > 1 else None,
        gather=sharding.process_allgather_ints,
        group_size=cfg.rl.group_size,
    )
    if loop.progress.phase_data is not None:
        pdata.restore(loop.progress.phase_data, ctx.by_id)
    return pdata


def sft_round(loop: Loop, ps: PhaseSpec, pdata: PhaseData, *, prefetch: bool) -> tuple[dict, dict]:
    """One SFT step: (metrics, the data order's state after its draw). With `prefetch`, the next
    step's batch is drawn, packed and sent while this one runs; its metrics are read after."""
    ctx = loop.ctx
    batch, loop.next_batch = loop.next_batch, None
    if batch is None:
        batch = sft_batch(ctx, loop.steps, pdata.next_batch(ps.phase.batch, loop.difficulty)[0], ps)
    t_update = time.perf_counter()
    loop.state, pending = sft_update(ctx, loop.steps, loop.state, batch)
    data_state = pdata.state()  # before the next step's draw
    if prefetch:
        loop.next_batch = sft_batch(ctx, loop.steps, pdata.next_batch(ps.phase.batch, loop.difficulty)[0], ps)
    metrics = sft_metrics(pending)
    metrics["time/update_seconds"] = time.perf_counter() - t_update
    return metrics, data_state


def rl_round(loop: Loop, ps: PhaseSpec, pdata: PhaseData) -> tuple[dict, dict]:
    """One RL step (rl_round.rl_step at the phase's shapes): (metrics, the data order's state)."""
    assert isinstance(ps.shapes, RLStepShapes)  # PhaseSpec: an RL phase has RL step shapes
    loop.state, metrics, by_update = rl_step(
        loop.ctx, loop.steps, loop.state, loop.step, ps.shapes, pdata, loop.difficulty
    )
    if by_update is not None:
        loop.last_update_metrics = by_update
    return metrics, pdata.state()


def finish_step(loop: Loop, ps: PhaseSpec, metrics: dict, lr: float, last: bool, t_step: float, bar) -> bool:
    """After a step: the non-finite limit, eval when due, the metrics row, the progress bar and a
    checkpoint when due; True when a stop request ends the run here."""
    ctx, cfg, step = loop.ctx, loop.ctx.cfg, loop.step
    metrics["nonfinite_total"] = check_nonfinite_steps(
        loop.state, cfg.optim.max_nonfinite_in_a_row, ctx.workdir, lambda: save(loop)
    )
    if (cfg.eval_every and step % cfg.eval_every == 0) or last:
        t_eval = time.perf_counter()
        ev = evaluate(ctx, loop.state.params)
        metrics.update(ev)
        metrics["time/eval_seconds"] = time.perf_counter() - t_eval
        loop.progress = dataclasses.replace(
            loop.progress, evals=loop.progress.evals + ({"step": step, "phase": ps.name, **ev},)
        )
    metrics["time/step_seconds"] = time.perf_counter() - t_step
    loop.writer.write(
        step, ps.name, {**metrics, "lr": float(lr), **{f"data/{k}": float(v) for k, v in ctx.data.counts.items()}}
    )
    bar.update(1)
    bar.set_postfix({k: f"{metrics[k]:.3f}" for k in ("reward_mean", "sft/nll", "loss") if k in metrics})
    if last:
        loop.progress = loop.progress.next_phase()
    stop = agreed(
        bool(loop.signals.requested or (loop.stop_after_steps and loop.steps_this_run >= loop.stop_after_steps))
    )
    if step % cfg.checkpoint_every == 0 or last or stop:
        save(loop)
    if stop:
        bar.close()
    return bool(stop)


def save(loop: Loop) -> None:
    """Checkpoint the state at the current step (never a broken model: params checked first)."""
    check_params_finite(loop.state, loop.step, loop.saved_step, loop.ctx.workdir)
    loop.progress = dataclasses.replace(loop.progress, step=loop.step, difficulty=loop.difficulty.state())
    loop.ckpt.save(loop.step, loop.state, loop.progress.to_meta())  # the checkpoint's meta: the same JSON as ever
    loop.saved_step = loop.step
    loop.writer.flush()  # the steps up to a checkpoint survive a kill -9 in TensorBoard too
