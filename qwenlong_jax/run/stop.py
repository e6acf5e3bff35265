"""SIGTERM and SIGINT for a training process: stop at the next step boundary, with a deadline.

    with StopSignals(grace_s=120) as stop:
        ...                              # disarmed: a signal ends the process at once, one line
        stop.arm(note)                   # a signal now asks the loop to stop (stop.requested)
        while ...: step(); if stop.requested: save(); break
        stop.disarm("exporting the HF checkpoint")

Armed (the training loop), the first signal asks the loop to finish its step, checkpoint and
return; if the process is still running `grace_s` seconds later (a step that is compiling or
generating for longer, or stuck), it exits anyway, with one `error:` line naming the latest
checkpoint (`note()`) and status 128 + the signal number; a second signal exits the same way at
once. Disarmed (setting up, restoring, exporting: nothing a signal could wait for), the first
signal exits at once, with that line.

Several processes (multi-host): the loop stops where `agreed(requested)` says, True on every
process as soon as one has a request, so all of them checkpoint the same step together and exit.
A preemption notice reaches hosts at different moments; a process that stopped alone would
leave the others waiting in the next step's collectives until their deadline.

Python runs a signal handler only between bytecodes of the main thread, so a main thread inside
one long compile or XLA call would not see the signal until it returns. Here the signal also
wakes a watcher thread (signal.set_wakeup_fd), which keeps the deadline whatever the main thread
is doing.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Literal

SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_S = 120.0  # default: seconds from the first signal to the forced exit


class StopSignals:
    def __init__(self, grace_s: float = GRACE_S, quiet: bool = False):
        if not grace_s > 0:
            raise ValueError(f"the stop grace period must be > 0 seconds, got {grace_s}")
        self.grace_s, self.quiet = grace_s, quiet
        self.requested = False
        self.armed = False
        self.doing = "setting up (nothing trained yet)"
        self.note: Callable[[], str] = lambda: "nothing was saved"
        self._signals = 0
        self._timer: threading.Timer | None = None
        self._installed = False

    # --- the main thread's side ---------------------------------------------------------------

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals are the main thread's; elsewhere this is a plain flag
        self._r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        self._old = {s: signal.signal(s, self._handler) for s in SIGNALS}
        self._installed = True
        threading.Thread(target=self._watch, args=(self._r,), name="stop-signals", daemon=True).start()
        return self

    def __exit__(self, *exc) -> Literal[False]:
        if self._timer is not None:
            self._timer.cancel()
        if self._installed:
            for s, h in self._old.items():
                signal.signal(s, h)
            signal.set_wakeup_fd(self._old_fd)
            os.close(self._w)  # the watcher reads end-of-file and returns (it closes _r)
            self._installed = False
        return False

    def arm(self, note: Callable[[], str]) -> None:
        """From here a signal asks the loop to stop; `note()` says what is saved, for the line
        printed when the process has to exit without the loop's checkpoint."""
        self.note, self.armed = note, True

    def disarm(self, doing: str) -> None:
        """From here a signal ends the process at once; `doing` says what it interrupts."""
        self.armed, self.doing = False, doing

    def _handler(self, signum, frame) -> None:
        self.requested = True  # the watcher (woken by the same signal) does the rest

    # --- the watcher thread ---------------------------------------------------------------------

    def _watch(self, r: int) -> None:
        try:
            while data := os.read(r, 64):
                for signum in data:
                    if signum in SIGNALS:
                        self._on_signal(signum)
        except OSError:
            pass
        finally:
            os.close(r)

    def _on_signal(self, signum: int) -> None:
        self.requested = True
        self._signals += 1
        name = signal.Signals(signum).name
        if not self.armed:
            self._exit(signum, f"{name} while {self.doing}")
        elif self._signals > 1:
            self._exit(signum, f"a second {name}: exiting at once, without a new checkpoint")
        else:
            if not self.quiet:
                print(
                    f"\n{name}: finishing the current step, then checkpointing and exiting "
                    f"(at most {self.grace_s:g} s; a second signal exits at once)",
                    flush=True,
                )
            self._timer = threading.Timer(
                self.grace_s,
                self._exit,
                (
                    signum,
                    f"{name}: the current step did not finish within {self.grace_s:g} s; exiting "
                    "without a new checkpoint",
                ),
            )
            self._timer.daemon = True
            self._timer.start()

    def _exit(self, signum: int, why: str) -> None:
        try:
            note = self.note()
        except Exception:  # noqa: BLE001 (the line must be printed whatever the note does)
            note = "the latest checkpoint is unknown"
        try:
            sys.stdout.flush()
        finally:
            os.write(2, f"\nerror: {why}; {note}\n".encode())
            os._exit(128 + signum)


def agreed(requested: bool) -> bool:
    """True on every process when `requested` is True on any (called by every process at the same
    step boundary): one all-gather of one int between the hosts; with one process, `requested`."""
    import numpy as np

    from qwenlong_jax.parallel import sharding

    return bool(sharding.process_allgather_ints(np.asarray([int(requested)], np.int32)).any())
