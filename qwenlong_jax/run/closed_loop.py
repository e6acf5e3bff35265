"""A filter for the harmless 'Event loop is closed' callbacks a failed orbax restore leaves behind
(run/checkpoint.py installs it before restoring)."""

from __future__ import annotations

import sys


def drop_closed_loop_callbacks() -> None:
    """After a restore that failed part-way, tensorstore completes the reads orbax abandoned and
        calls back into orbax's event loop, already closed: each callback's RuntimeError('Event loop
        is closed') reaches sys.unraisablehook, which prints a traceback (dozens, seconds later).
        They are harmless and not the user's; only they are dropped (installed before restoring, kept
    after: they arrive during and after the failed restore); every other unraisable exception
    still goes to the previous hook."""
    hook = sys.unraisablehook
    if getattr(hook, "_drops_closed_loop", False):
        return

    def drop(u):
        if not (isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed"):
            hook(u)

    drop._drops_closed_loop = True  # type: ignore[attr-defined]  # a marker on the hook function
    sys.unraisablehook = drop
