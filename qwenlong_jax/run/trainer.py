"""The training run: SFT warm-up and RL phases of growing context, checkpointed and resumable.

    summary = Trainer(cfg, workdir).run()

The pieces (docs/design.md): run_context.py sets the run up (mesh, tokenizer, model config,
data, state, jitted steps); sft_round.sft_step and rl_round.rl_step (sample -> reward -> filter
-> pack -> update) are one step each; this file is the loop: restore -> phases -> step -> eval
-> save, with where the run stands in a typed Progress (progress.py). Jitted functions are built
once per shape (shapes are static within a phase). Checkpoints hold everything needed to resume
(checkpoint.py); a resumed run produces the same params and metrics as an uninterrupted one (RNG
keys derive from (seed, step), the data order from the checkpointed grain iterator).
SIGTERM/SIGINT (stop.py): the current step finishes, a checkpoint is written, exit 0; a step
that does not finish within the grace period (a long compile or generation) or a second signal
ends the process anyway, naming the latest checkpoint. Parameters are checked at every save: a
run never checkpoints, exports or reports "done" from non-finite parameters.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
from tqdm import tqdm

from qwenlong_jax import paths, sharding
from qwenlong_jax.run.checkpoint import Checkpointer, abstract_like
from qwenlong_jax.config import Config, PhaseKind
from qwenlong_jax.run.curriculum import Difficulty, PhaseData, hard_pool_for
from qwenlong_jax.data.pipeline import process_shard
from qwenlong_jax.run.export import export_hf
from qwenlong_jax.run.metrics import MetricsWriter, plot_run, read_metrics, time_split
from qwenlong_jax.run.progress import Progress
from qwenlong_jax.run.rl_round import rl_step
from qwenlong_jax.run.context import evaluate, setup
from qwenlong_jax.run.schedule import phase_lr, phase_steps
from qwenlong_jax.run.spec import Reference
from qwenlong_jax.run.sft_round import sft_step
from qwenlong_jax.run.state import JittedSteps, init_state, reference
from qwenlong_jax.run.stop import StopSignals
from qwenlong_jax.run.train_state import TrainState, with_lr
from qwenlong_jax.run.workdir_lock import WorkdirLock


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class TrainingError(RuntimeError):
    """A run that cannot go on (e.g. K non-finite steps in a row); a checkpoint was written."""


class Trainer:
    def __init__(self, cfg: Config, workdir: str, *, judge=None, stop_after_steps: int | None = None,
                 quiet: bool = False, devices=None, signals: StopSignals | None = None):
        """signals: the process's StopSignals when the caller installed one (train.py, before the
        set-up); otherwise run() installs its own."""
        self.cfg, self.workdir, self.quiet = cfg, workdir, quiet
        self.stop_after_steps = stop_after_steps  # test hook: stop (with a checkpoint) after N steps
        self.signals = signals
        self.saved_step: int | None = None  # the latest checkpoint this run restored or wrote
        self.ctx = setup(cfg, workdir, judge=judge, devices=devices)  # fails before anything compiles
        self.mcfg = self.ctx.mcfg
        self.last_update_metrics = None  # the last RL update's metrics per update, for tests and debugging

    def _init_state(self) -> TrainState:
        return init_state(self.ctx)

    def evaluate(self, params) -> dict:
        return evaluate(self.ctx, params)

    def _checkpoint_note(self) -> str:
        if self.saved_step is None:
            return f"no checkpoint in {self.workdir}/checkpoints yet (a rerun starts at step 0)"
        return (f"the latest checkpoint is step {self.saved_step} in {self.workdir}/checkpoints (rerun the same "
                "command to resume from it)")

    def run(self) -> dict:
        own = self.signals is None
        with (StopSignals(quiet=self.quiet) if own else contextlib.nullcontext(self.signals)) as signals:
            self.signals = signals
            signals.disarm("starting the run (initialising the state, restoring the latest checkpoint)")
            signals.note = self._checkpoint_note
            lock = WorkdirLock(self.workdir).acquire() if jax.process_index() == 0 else None
            try:
                return self._run()
            finally:
                if lock is not None:
                    lock.release()
                if own:
                    self.signals = None

    def _resume_check(self, state, progress: Progress) -> tuple[Progress, dict | None]:
        """A restored state that cannot make progress ends the run here, in one line, instead of
        looping: a phase whose steps are all done moves on; a finished run returns its summary;
        a state already over the non-finite limit is a TrainingError saying what to do."""
        cfg, per_phase = self.cfg, self.ctx.per_phase
        while progress.phase_index < len(cfg.phases) and progress.phase_step >= phase_steps(
                self.ctx.spec.phases[progress.phase_index], len(per_phase[progress.phase_index])):
            progress = progress.next_phase()
        if not bool(jax.device_get(_all_finite(state.params))):
            raise TrainingError(
                f"the checkpoint at step {progress.step} in {self.workdir}/checkpoints holds non-finite parameters; "
                "resume from an earlier one (delete the later step directories) or start again in a new --workdir")
        bad = int(jax.device_get(state.nonfinite_in_a_row))
        if bad >= cfg.optim.max_nonfinite_in_a_row:
            raise TrainingError(
                f"the checkpoint at step {progress.step} in {self.workdir}/checkpoints already ends with {bad} "
                f"non-finite steps in a row (optim.max_nonfinite_in_a_row={cfg.optim.max_nonfinite_in_a_row}), "
                "so resuming would stop again at once; start over in a new --workdir (e.g. with a lower "
                "optim.lr), or raise optim.max_nonfinite_in_a_row to continue from its last good params")
        if progress.phase_index >= len(cfg.phases):
            spath = paths.join(self.workdir, "summary.json")
            if paths.exists(spath):
                if not self.quiet:
                    print(f"the run in {self.workdir} already finished at step {progress.step}; nothing to do "
                          "(use a new --workdir to train again)")
                return progress, {**json.loads(paths.read_text(spath)), "already_finished": True}
        return progress, None

    def _restore(self, ckpt: Checkpointer, state: TrainState):
        """restore_latest into the layout of `state`, with the KL reference reconciled when the
        checkpoint was written with another rl.kl_coef: a reference the run no longer uses is
        dropped; a missing one is rebuilt where the run can (rl.ref_from, or the resumed phase
        takes its reference at its start anyway), and otherwise the run stops in one line
        instead of treating every checkpoint as unreadable and starting over."""
        saved = ckpt.steps()
        saved_ref = ckpt.has_state_field(saved[-1], "ref_params") if saved else None
        wants_ref = self.ctx.spec.holds_reference
        if saved_ref is None or saved_ref == wants_ref:
            return ckpt.restore_latest(abstract_like(state))
        restored = ckpt.restore_latest(abstract_like(state.replace(ref_params=state.params if saved_ref else None)))
        if restored is None:
            return None
        step, rstate, meta = restored
        if not wants_ref:  # rl.kl_coef is 0 now
            return step, rstate.replace(ref_params=None), meta
        cfg, progress = self.cfg, Progress.from_meta(meta)
        mid_rl_phase = (progress.phase_index < len(cfg.phases) and progress.phase_step > 0
                        and cfg.phases[progress.phase_index].kind == PhaseKind.RL)
        if mid_rl_phase and self.ctx.spec.reference == Reference.PHASE_START:
            raise TrainingError(
                f"the checkpoint at step {step} in {self.workdir}/checkpoints was written with rl.kl_coef=0, "
                f"in the middle of RL phase {cfg.phases[progress.phase_index].name!r}, so it holds no KL reference "
                f"(the phase's starting policy); resume with --config.rl.kl_coef=0, or set rl.ref_from to the "
                "reference checkpoint, or start over in a new --workdir")
        # The reference from rl.ref_from, or a placeholder the next RL phase's start replaces.
        return step, rstate.replace(ref_params=reference(self.ctx, rstate.params)), meta

    def _run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        t_start = time.time()
        ckpt = Checkpointer(paths.join(self.workdir, "checkpoints"), keep=cfg.keep_checkpoints)
        state = init_state(ctx)
        steps = JittedSteps(ctx, state)  # built on first use, with the state's shardings
        progress = Progress(difficulty=Difficulty().state())
        try:
            restored = self._restore(ckpt, state)
            if restored is not None:
                self.saved_step, state, meta = restored
                progress, done = self._resume_check(state, Progress.from_meta(meta))
        except TrainingError:
            ckpt.close()
            raise
        if restored is not None:
            if done is not None:
                ckpt.close()
                return done
            if not self.quiet:
                print(f"resumed from step {progress.step} (phase {cfg.phases[progress.phase_index].name})"
                      if progress.phase_index < len(cfg.phases) else f"resumed a finished run at step {progress.step}")
        difficulty = Difficulty.from_state(progress.difficulty)
        pi = jax.process_index()
        writer = MetricsWriter(self.workdir if pi == 0 else paths.join(self.workdir, f"process_{pi}"),
                               resume_step=progress.step, enabled=pi == 0 or cfg.log_all_processes,
                               tensorboard=pi == 0)
        self.signals.arm(self._checkpoint_note)
        step = progress.step
        steps_this_run = 0

        def save():
            nonlocal progress
            self._check_params_finite(state, step)  # never a checkpoint of a broken model
            progress = dataclasses.replace(progress, step=step, difficulty=difficulty.state())
            ckpt.save(step, state, progress.to_meta())  # the checkpoint's meta: the same JSON dict as ever
            self.saved_step = step
            writer.flush()  # the steps up to a checkpoint survive a kill -9 in TensorBoard too

        try:
            while progress.phase_index < len(cfg.phases):
                k = progress.phase_index
                ps = ctx.spec.phases[k]
                phase = ps.phase
                recs = ctx.per_phase[k]
                hard = hard_pool_for(k, cfg.phases, ctx.per_phase, difficulty, cfg.retro) if phase.kind == PhaseKind.RL else []
                pdata = PhaseData(recs, hard, phase, cfg.retro, seed=cfg.seed * 1000 + k + 1_000_003 * cfg.data.shuffle_seed,
                                  shard=process_shard() if jax.process_count() > 1 else None,
                                  gather=sharding.process_allgather_ints, group_size=cfg.rl.group_size)
                if progress.phase_data is not None:
                    pdata.restore(progress.phase_data, ctx.by_id)
                n_steps = phase_steps(ps, len(recs))
                bar = tqdm(total=n_steps, initial=progress.phase_step, desc=f"{phase.name} ({phase.kind})",
                           disable=self.quiet or jax.process_index() != 0)
                if phase.kind == PhaseKind.RL and ctx.spec.reference == Reference.PHASE_START and progress.phase_step == 0:
                    state = state.replace(ref_params=reference(ctx, state.params))  # the phase's start
                while progress.phase_step < n_steps:
                    t_step = time.perf_counter()
                    lr = phase_lr(cfg, phase, progress.phase_step, n_steps)
                    state = with_lr(state, lr)
                    if phase.kind == PhaseKind.SFT:
                        batch_recs, _ = pdata.next_batch(phase.batch, difficulty)
                        t_update = time.perf_counter()
                        state, metrics = sft_step(ctx, steps, state, batch_recs, ps)
                        metrics["time/update_seconds"] = time.perf_counter() - t_update
                    else:
                        state, metrics, by_update = rl_step(ctx, steps, state, step, ps.shapes, pdata, difficulty)
                        if by_update is not None:
                            self.last_update_metrics = by_update
                    step += 1
                    steps_this_run += 1
                    progress = dataclasses.replace(progress, phase_step=progress.phase_step + 1,
                                                   phase_data=pdata.state())
                    self._check_finite(state, metrics, save)
                    last_of_phase = progress.phase_step == n_steps
                    if (cfg.eval_every and step % cfg.eval_every == 0) or last_of_phase:
                        t_eval = time.perf_counter()
                        ev = evaluate(ctx, state.params)
                        metrics.update(ev)
                        metrics["time/eval_seconds"] = time.perf_counter() - t_eval
                        progress = dataclasses.replace(
                            progress, evals=progress.evals + ({"step": step, "phase": phase.name, **ev},))
                    metrics["time/step_seconds"] = time.perf_counter() - t_step
                    writer.write(step, phase.name, {**metrics, "lr": float(lr), **{
                        f"data/{k2}": float(v) for k2, v in ctx.data.counts.items()}})
                    bar.update(1)
                    bar.set_postfix({k2: f"{metrics[k2]:.3f}" for k2 in ("reward_mean", "sft/nll", "loss") if k2 in metrics})
                    if last_of_phase:
                        progress = progress.next_phase()
                    stop = self.signals.requested or (self.stop_after_steps and steps_this_run >= self.stop_after_steps)
                    if step % cfg.checkpoint_every == 0 or last_of_phase or stop:
                        save()
                    if stop:
                        bar.close()
                        return {"stopped": True, "step": step}
                    if last_of_phase:
                        break
                bar.close()
            save()
        finally:
            self.signals.disarm("closing the run's files")
            writer.close()
            ckpt.close()
        self.signals.disarm(f"exporting (training finished; the final checkpoint, step {step}, is saved: "
                            "rerun the same command to export)")
        return self._finish(state, progress, time.time() - t_start)

    def _check_params_finite(self, state, step: int) -> None:
        """TrainingError (one line, naming the latest checkpoint, which is finite: every save is
        checked) when a parameter is nan or inf. The update skips a non-finite loss or gradient,
        but an update of finite numbers can still overflow the parameters."""
        if bool(jax.device_get(_all_finite(state.params))):
            return
        raise TrainingError(
            f"the parameters are not finite at step {step} (an update overflowed: e.g. too large an optim.lr "
            f"or phase lr); nothing from step {step} was saved or exported, and the last finite parameters are "
            + (f"checkpoint step {self.saved_step} in {self.workdir}/checkpoints" if self.saved_step is not None
               else "the initial ones (no checkpoint was written)")
            + "; lower the learning rate and start again in a new --workdir")

    def _check_finite(self, state, metrics, save) -> None:
        bad = int(jax.device_get(state.nonfinite_in_a_row))
        metrics["nonfinite_total"] = float(jax.device_get(state.nonfinite_total))
        if bad >= self.cfg.optim.max_nonfinite_in_a_row:
            save()
            raise TrainingError(
                f"{bad} non-finite losses/gradients in a row (optim.max_nonfinite_in_a_row="
                f"{self.cfg.optim.max_nonfinite_in_a_row}); the last good state is checkpointed in "
                f"{self.workdir}/checkpoints. Lower optim.lr or check the data, and start again in a new "
                "--workdir (a rerun here stops at once: the checkpoint is over the limit).")

    def _finish(self, state, progress: Progress, seconds: float) -> dict:
        ctx = self.ctx
        export = paths.join(self.workdir, "hf")
        if self.cfg.export_hf:
            export_hf(export, ctx.mcfg, state.params, ctx.tok, ctx.spec.tok_path)
        plots = plot_run(self.workdir) if jax.process_index() == 0 else []
        summary = {"steps": progress.step, "minutes": round(seconds / 60, 2), "evals": list(progress.evals),
                   "export": export if self.cfg.export_hf else None, "plots": plots,
                   "data": dict(ctx.data.counts)}  # rows skipped / dropped, by reason
        if jax.process_index() == 0:
            # Where the steps' wall time went, per phase (metrics.time_split), resumed steps too.
            summary["time_split_seconds"] = time_split(read_metrics(self.workdir))
            paths.write_text(paths.join(self.workdir, "summary.json"), json.dumps(summary, indent=2))
        return summary
