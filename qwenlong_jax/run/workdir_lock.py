"""One live run per workdir: WORKDIR/run.lock holds the owner's pid and host.

    with WorkdirLock(workdir):   # WorkdirLocked (one line: pid, host, what to do) if held
        ...

A lock whose process is gone (same host, pid no longer alive: a run killed with -9) is stale
and taken over. A lock from another host cannot be checked from here; the message names it
and says to delete the file if that run is gone. Local workdirs create the file atomically
(O_EXCL); object stores have no such primitive, so there the check is write-then-read-back.
"""

from __future__ import annotations

import json
import os
import socket
import time

from qwenlong_jax import paths

LOCK_NAME = "run.lock"


class WorkdirLocked(RuntimeError):
    """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkdirLock:
    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = paths.join(workdir, LOCK_NAME)
        self.me = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 1)}
        self.held = False

    def _read(self) -> dict | None:
        try:
            return json.loads(paths.read_text(self.path))
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {}  # torn or unreadable: treated as stale below

    def _stale(self, holder: dict) -> bool:
        if not holder or "pid" not in holder:
            return True
        if holder.get("host") != self.me["host"]:
            return False
        return holder["pid"] == self.me["pid"] or not _alive(int(holder["pid"]))

    def _refuse(self, holder: dict):
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
        raise WorkdirLocked(
            f"workdir {self.workdir} is in use by pid {holder['pid']} on host {holder.get('host')} "
            f"(since {since}); wait for that run to end or use another --workdir"
            + ("" if holder.get("host") == self.me["host"] else f" (if that run is gone, delete {self.path})")
        )

    def acquire(self) -> WorkdirLock:
        paths.makedirs(self.workdir)
        data = json.dumps(self.me).encode()
        if not paths.is_remote(self.path):
            for _ in range(3):
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    holder = self._read()
                    if holder is None:
                        continue  # released meanwhile: try again
                    if not self._stale(holder):
                        self._refuse(holder)
                    os.remove(self.path)  # stale (killed run): take it over
                    continue
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                self.held = True
                return self
            holder = self._read() or {"pid": "?", "host": "?"}
            self._refuse(holder)
        holder = self._read()
        if holder is not None and not self._stale(holder):
            self._refuse(holder)
        paths.write_bytes(self.path, data)
        if self._read() != self.me:  # another run wrote in between
            self._refuse(self._read() or {"pid": "?", "host": "?"})
        self.held = True
        return self

    def release(self) -> None:
        if self.held and self._read() == self.me:
            paths.remove(self.path)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
