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
import shutil
import sys
import tempfile
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from qwenlong_jax import paths
from qwenlong_jax.run.closed_loop import drop_closed_loop_callbacks

log = logging.getLogger(__name__)


class CheckpointSaveError(RuntimeError):
    """A save that failed part-way (e.g. disk full); the earlier checkpoints are intact."""


def _cause(e: BaseException) -> str:
    """The innermost OS-level reason of a failed save (orbax/tensorstore wrap it), one line."""
    seen: set[int] = set()
    cur: BaseException | None = e
    best: str | None = None
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.strerror:
            best = cur.strerror
        cur = cur.__cause__ or cur.__context__
    if best is None:
        text = str(e)
        best = next(
            (
                m
                for m in (
                    "No space left on device",
                    "File too large",
                    "Permission denied",
                    "Disk quota exceeded",
                    "Read-only file system",
                )
                if m in text
            ),
            (text.splitlines() or [type(e).__name__])[0][:200],
        )
    return best


class _stderr_to_file:
    """Send file descriptor 2 to a temporary file for the duration (C++ and thread output
    included). `replay()` copies it back to stderr (a save that worked keeps its warnings);
    `keep()` leaves the file for a failed save and returns its path (None if empty)."""

    def __init__(self, append_to: str | None = None):
        self.append_to = append_to

    def __enter__(self):

        sys.stderr.flush()
        if self.append_to:
            self.file = open(self.append_to, "a+b")
        else:
            self.file = tempfile.NamedTemporaryFile("w+b", prefix="qwenlong_ckpt_save_", suffix=".log", delete=False)
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):

        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.flush()
        return False

    def replay(self) -> None:
        self.file.seek(0)
        text = self.file.read()
        self.file.close()
        os.remove(self.file.name)
        if text:
            os.write(2, text)

    def keep(self) -> str | None:
        self.file.close()
        if not os.path.exists(self.file.name):
            return None
        if os.path.getsize(self.file.name) == 0:
            os.remove(self.file.name)
            return None
        return self.file.name


class Checkpointer:
    """orbax CheckpointManager over `directory`: local or gs:// (orbax writes those itself);
    other object-store schemes (s3://, memory://, ... through qwenlong_jax/paths/) are written to a
    local staging directory and each finished step is uploaded, then pruned alike."""

    def __init__(self, directory: str, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be >= 1, got {keep} (0 would keep none: no resume)")
        self.target = directory
        self.staged = paths.is_remote(directory) and paths.scheme(directory) != "gs"
        if self.staged:
            self.directory = tempfile.mkdtemp(prefix="qwenlong_ckpt_")
            for name in paths.listdir(directory):
                if name.isdigit():
                    paths.download(paths.join(directory, name), os.path.join(self.directory, name))
        else:
            self.directory = directory if paths.is_remote(directory) else os.path.abspath(directory)
        self._corrupt: set[int] = set()  # steps found unreadable: replaced when saved again
        self._muted: _stderr_to_file | None = None  # stderr diverted after a failed save
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False),
        )

    def save(self, step: int, state: Any, meta: dict) -> None:
        if step in self.manager.all_steps():  # already saved at this step (e.g. at a phase end)
            if step not in self._corrupt:
                return
            self.manager.delete(step)  # found corrupt on restore: write it again
            self._corrupt.discard(step)
        self._remove_partial(step)
        try:
            with _stderr_to_file() as noise:  # orbax/tensorstore threads print tracebacks on failure
                self.manager.save(
                    step,
                    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                    force=True,
                )
                self.manager.wait_until_finished()
            noise.replay()
            if self.staged:
                paths.upload(os.path.join(self.directory, str(step)), paths.join(self.target, str(step)))
                keep = {str(s) for s in self.manager.all_steps()}
                for name in paths.listdir(self.target):
                    if name.isdigit() and name not in keep:
                        paths.remove(paths.join(self.target, name), recursive=True)
        except Exception as e:  # orbax writes into a temporary directory: nothing earlier is touched
            prev = [s for s in self.steps() if s != step and s not in self._corrupt]
            details = noise.keep() if "noise" in locals() else None
            # orbax's writer threads go on failing (and printing) until the manager closes:
            # their output joins the same log until close().
            self._muted = _stderr_to_file(details).__enter__()
            raise CheckpointSaveError(
                f"saving checkpoint {step} in {self.target} failed ({_cause(e)}); the previous "
                f"checkpoint ({f'step {prev[-1]}' if prev else 'none'}) is intact"
                + (f"; orbax's log: {details}" if details else "")
            ) from None

    def _remove_partial(self, step: int) -> None:
        """A failed save's temporary directory, removed before saving that step again. orbax
        removes it too, but a failed save's writer threads may still be adding files to it,
        and its single rmtree then fails ("Directory not empty"): retry until it is gone."""
        if paths.is_remote(self.directory):
            return
        tmp = os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp")
        for _ in range(50):
            if not os.path.exists(tmp):
                return
            shutil.rmtree(tmp, ignore_errors=True)
            time.sleep(0.05)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def has_state_field(self, step: int, field: str) -> bool | None:
        """Whether checkpoint `step` holds arrays under the state's `field` (e.g. `ref_params`),
        read from its metadata without restoring it; None when that cannot be read (a torn
        checkpoint: restore_latest then reports it and falls back)."""
        try:  # the manager's item_metadata needs the handlers registered; the handler reads it directly
            tree = ocp.StandardCheckpointHandler().metadata(self.manager.directory / str(step) / "state").tree
        except Exception:  # noqa: BLE001 (any unreadable metadata is "unknown")
            return None
        return tree.get(field) is not None if isinstance(tree, dict) else None

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
        """(step, state, meta) of the newest checkpoint that restores, or None."""
        drop_closed_loop_callbacks()  # a torn checkpoint's abandoned reads call back late
        for step in reversed(self.steps()):
            try:
                out = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                    ),
                )
                return step, out["state"], out["meta"]
            except Exception as e:  # torn/corrupt checkpoint: fall back to the previous one
                self._corrupt.add(step)
                log.warning(
                    "checkpoint %d in %s could not be restored (%s: %s); trying the previous one",
                    step,
                    self.target,
                    type(e).__name__,
                    str(e).splitlines()[0][:200],
                )
                print(
                    f"warning: checkpoint {step} in {self.target} is unreadable; using the previous one "
                    "(it is replaced when the run saves that step again)"
                )
        return None

    def close(self) -> None:
        try:
            self.manager.close()
        finally:
            if self._muted is not None:
                self._muted.__exit__(None, None, None)
                self._muted.keep()
                self._muted = None
        if self.staged:
            shutil.rmtree(self.directory, ignore_errors=True)


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs with shardings, for restoring into the same layout."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
