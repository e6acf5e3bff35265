"""The training run: SFT warm-up and RL phases of growing context, checkpointed and resumable.

    summary = Trainer(cfg, workdir).run()

The pieces (docs/design.md): context.py sets the run up (its RunSpec: mesh, tokenizer, model
config, step shapes; then data and judge); resume.py starts it (the latest checkpoint, else a
fresh state); loop.py runs the phases (sft_round / rl_round, eval, metrics, checkpoints), with
where the run stands in a typed Progress (progress.py); this file holds them together: the stop
signals, the workdir lock, the export and the summary. Jitted functions are built once per
shape (shapes are static within a phase). Checkpoints hold everything needed to resume
(checkpoint.py); a resumed run produces the same params and metrics as an uninterrupted one (RNG
keys derive from (seed, step), the data order from the checkpointed grain iterator).
SIGTERM/SIGINT (stop.py): the current step finishes, a checkpoint is written, exit 0; a step
that does not finish within the grace period (a long compile or generation) or a second signal
ends the process anyway, naming the latest checkpoint. Parameters are checked at every save: a
run never checkpoints, exports or reports "done" from non-finite parameters.
"""

from __future__ import annotations

import contextlib
import json
import time

import jax

from qwenlong_jax import paths
from qwenlong_jax.config import Config
from qwenlong_jax.run.checkpoint import Checkpointer
from qwenlong_jax.run.context import evaluate, setup
from qwenlong_jax.run.export import export_hf
from qwenlong_jax.run.finite import TrainingError
from qwenlong_jax.run.loop import Loop, checkpoint_note, run_phases
from qwenlong_jax.run.metrics import MetricsWriter, plot_run, read_metrics, time_split
from qwenlong_jax.run.progress import Progress
from qwenlong_jax.run.resume import begin
from qwenlong_jax.run.state import JittedSteps
from qwenlong_jax.run.stop import StopSignals
from qwenlong_jax.run.workdir_lock import WorkdirLock

__all__ = ["Trainer", "TrainingError"]


class Trainer:
    def __init__(
        self,
        cfg: Config,
        workdir: str,
        *,
        judge=None,
        stop_after_steps: int | None = None,
        quiet: bool = False,
        devices=None,
        signals: StopSignals | None = None,
    ):
        """signals: the process's StopSignals when the caller installed one (train.py, before the
        set-up); otherwise run() installs its own."""
        self.cfg, self.workdir, self.quiet = cfg, workdir, quiet
        self.stop_after_steps = stop_after_steps  # test hook: stop (with a checkpoint) after N steps
        self.signals = signals
        self.ctx = setup(cfg, workdir, judge=judge, devices=devices)  # fails before anything compiles
        self.mcfg = self.ctx.mcfg
        self.loop: Loop | None = None  # the run in progress (run())
        self.saved_step: int | None = None  # the checkpoint restored, until the loop takes over

    @property
    def last_update_metrics(self):
        """The last RL update's metrics per update, for tests and debugging."""
        return self.loop.last_update_metrics if self.loop else None

    def evaluate(self, params) -> dict:
        return evaluate(self.ctx, params)

    def _checkpoint_note(self) -> str:
        return checkpoint_note(self.workdir, self.loop.saved_step if self.loop else self.saved_step)

    def run(self) -> dict:
        own = self.signals is None
        with StopSignals(quiet=self.quiet) if own else contextlib.nullcontext(self.signals) as signals:
            assert signals is not None  # own: a new StopSignals; else the caller's
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

    def _run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        t_start = time.time()
        ckpt = Checkpointer(paths.join(self.workdir, "checkpoints"), keep=cfg.keep_checkpoints)
        try:
            start = begin(ctx, ckpt, quiet=self.quiet)  # a checkpoint, else model.init_from or a random init
        except TrainingError:
            ckpt.close()
            raise
        self.saved_step, progress = start.saved_step, start.progress
        if start.done is not None:
            ckpt.close()
            return start.done
        if start.saved_step is not None and not self.quiet:
            print(
                f"resumed from step {progress.step} (phase {cfg.phases[progress.phase_index].name})"
                if progress.phase_index < len(cfg.phases)
                else f"resumed a finished run at step {progress.step}"
            )
        pi = jax.process_index()
        writer = MetricsWriter(
            self.workdir if pi == 0 else paths.join(self.workdir, f"process_{pi}"),
            resume_step=progress.step,
            enabled=pi == 0 or cfg.log_all_processes,
            tensorboard=pi == 0,
        )
        # The jitted steps are built on first use, with the state's shardings.
        self.loop = loop = Loop(
            ctx,
            JittedSteps(ctx, start.state),
            ckpt,
            writer,
            self.signals,
            start.state,
            progress,
            step=progress.step,
            saved_step=start.saved_step,
            stop_after_steps=self.stop_after_steps,
            quiet=self.quiet,
        )
        assert self.signals is not None  # set by run()
        self.signals.arm(self._checkpoint_note)
        try:
            stopped = run_phases(loop)
        finally:
            self.signals.disarm("closing the run's files")
            writer.close()
            ckpt.close()
        if stopped:
            return {"stopped": True, "step": loop.step}
        self.signals.disarm(
            f"exporting (training finished; the final checkpoint, step {loop.step}, is saved: "
            "rerun the same command to export)"
        )
        return self._finish(loop.state, loop.progress, time.time() - t_start)

    def _finish(self, state, progress: Progress, seconds: float) -> dict:
        ctx = self.ctx
        export = paths.join(self.workdir, "hf")
        if self.cfg.export_hf:
            export_hf(export, ctx.mcfg, state.params, ctx.tok, ctx.spec.tok_path)
        plots = plot_run(self.workdir) if jax.process_index() == 0 else []
        summary = {
            "steps": progress.step,
            "minutes": round(seconds / 60, 2),
            "evals": list(progress.evals),
            "export": export if self.cfg.export_hf else None,
            "plots": plots,
            "data": dict(ctx.data.counts),
        }  # rows skipped / dropped, by reason
        if jax.process_index() == 0:
            # Where the steps' wall time went, per phase (metrics.time_split), resumed steps too.
            summary["time_split_seconds"] = time_split(read_metrics(self.workdir))
            paths.write_text(paths.join(self.workdir, "summary.json"), json.dumps(summary, indent=2))
        return summary
