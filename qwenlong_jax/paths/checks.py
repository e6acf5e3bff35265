"""User paths checked before use: globs expanded, and what stops a local path from being read.

paths.expand(["gs://bucket/data/*.parquet", "local.jsonl"])   # globs -> sorted file list
paths.check_readable(path, "checkpoint", want="dir")          # PathError naming the path
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

from qwenlong_jax.paths.filesystem import PathError, exists, filesystem, is_remote, isdir, join, scheme


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def expand(paths: str | Sequence[str], what: str = "data file") -> list[str]:
    """Files named by `paths` (each a file or a glob), in order, globs sorted. A glob matching
    nothing, a missing path or a directory is a PathError."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out: list[str] = []
    for path in map(os.fspath, paths):
        fs, p = filesystem(path)
        if _has_magic(path):
            hits = sorted(__import__("glob").glob(p) if fs is None else fs.glob(p))
            if fs is not None:
                hits = [fs.unstrip_protocol(h) if not h.startswith(scheme(path) + "://") else h for h in hits]
                hits = [h for h in hits if not fs.isdir(filesystem(h)[1])]
            else:
                hits = [h for h in hits if not os.path.isdir(h)]
            if not hits:
                raise PathError(f"{what} {path!r}: the pattern matches no file")
            for h in hits if fs is None else ():
                check_readable(h, what)
            out.extend(hits)
            continue
        if fs is None:
            check_readable(path, what)
        elif not exists(path):
            raise PathError(f"{what} {path!r} does not exist")
        if isdir(path):
            raise PathError(
                f"{what} {path!r} is a directory; name its files (a glob such as {join(path, '*.parquet')!r} works)"
            )
        out.append(path)
    return out


def local_problem(path: str, want: str = "any") -> str | None:
    """What stops a local `path` from being read, in words, or None: missing, a broken symlink,
    a symlink loop, permission denied, or (want="file"/"dir") the wrong kind."""
    p = filesystem(path)[1]
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symlink loop"
        if e.errno == errno.EACCES:
            return "cannot be read (permission denied)"
        if e.errno == errno.ENOTDIR:
            return "does not exist (a part of it is not a directory)"
        if os.path.islink(p):
            return f"is a broken symlink (to {os.readlink(p)!r}, which does not exist)"
        return "does not exist"
    is_dir = stat.S_ISDIR(st.st_mode)
    if want == "file" and is_dir:
        return "is a directory, not a file"
    if want == "dir" and not is_dir:
        return "is a file, not a directory"
    if not os.access(p, os.R_OK | (os.X_OK if is_dir else 0)):
        return "cannot be read (permission denied)"
    if not is_dir:
        try:
            with __import__("builtins").open(p, "rb"):
                pass
        except OSError as e:  # permission as root-squashed mounts or ACLs decide it
            return f"cannot be read ({e.strerror or type(e).__name__})"
    return None


def check_readable(path: str, what: str, want: str = "any") -> None:
    """PathError, one line naming `path` and what is wrong with it (local_problem), unless a
    local `path` can be read; remote paths are checked when they are opened."""
    if is_remote(path):
        return
    problem = local_problem(path, want)
    if problem:
        raise PathError(f"{what} {path!r} {problem}")
