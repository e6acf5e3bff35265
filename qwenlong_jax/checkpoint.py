"""One orbax checkpoint of everything needed to resume: the TrainState (params, optimizer,
step, non-finite counters) and a JSON `meta` (phase, step within phase, data iterator and
hard-pool state, difficulty history, RNG seed position, metrics count).

Saves are atomic (orbax writes a temporary directory and renames it when complete), so a
run killed mid-save leaves the previous checkpoint as the latest complete one. A checkpoint
that fails to restore (torn or corrupt files) is skipped with a warning and the previous one
is used.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointSaveError(RuntimeError):
    """A save that failed part-way (e.g. disk full); the earlier checkpoints are intact."""


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3):
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=False),
        )

    def save(self, step: int, state: Any, meta: dict) -> None:
        if step in self.manager.all_steps():  # already saved at this step (e.g. at a phase end)
            return
        try:
            self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                            meta=ocp.args.JsonSave(meta)), force=True)
            self.manager.wait_until_finished()
        except OSError as e:  # orbax writes into a temporary directory: nothing earlier is touched
            prev = self.steps()
            raise CheckpointSaveError(
                f"saving checkpoint {step} in {self.directory} failed ({e.strerror or e}); the previous "
                f"checkpoint ({f'step {prev[-1]}' if prev else 'none'}) is intact") from e

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """(step, state, meta) of the newest checkpoint that restores, or None."""
        for step in reversed(self.steps()):
            try:
                out = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
                return step, out["state"], out["meta"]
            except Exception as e:  # torn/corrupt checkpoint: fall back to the previous one
                log.warning("checkpoint %d in %s could not be restored (%s: %s); trying the previous one",
                            step, self.directory, type(e).__name__, str(e).splitlines()[0][:200])
                print(f"warning: checkpoint {step} in {self.directory} is unreadable; using the previous one")
        return None

    def close(self) -> None:
        self.manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs with shardings, for restoring into the same layout."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
