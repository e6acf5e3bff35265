"""One path layer for every path a user gives: local disk and object stores, through fsspec.

    paths.expand(["gs://bucket/data/*.parquet", "local.jsonl"])   # globs -> sorted file list
    with paths.open("gs://bucket/x.jsonl", "rb") as f: ...
    local = paths.local_copy("gs://bucket/ckpt")   # for readers that need a real file (mmap)

A path with a scheme (`gs://`, `s3://`, `memory://`, ...) goes to that fsspec filesystem
(`gs://` needs the `gcsfs` package); anything else is local. Errors are `PathError`, one line
naming the path. Object stores have no append and no atomic rename: writers here rewrite
whole small files (metrics, summary) and upload directories written locally (exports,
TensorBoard, checkpoints for schemes orbax cannot write itself; see checkpoint.py).
"""
from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import shutil
import stat
import tempfile
from typing import IO, Sequence


class PathError(ValueError):
    """A user path that does not exist, is of the wrong kind, or whose filesystem is unusable."""


def is_remote(path: str) -> bool:
    path = os.fspath(path)
    return "://" in path and not path.startswith("file://")


def scheme(path: str) -> str:
    return os.fspath(path).split("://", 1)[0] if is_remote(path) else "file"


def _fs(path: str):
    import fsspec.core

    path = os.fspath(path)
    if not is_remote(path):
        return None, os.path.expanduser(path[len("file://"):] if path.startswith("file://") else path)
    try:
        fs, p = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError) as e:  # e.g. gs:// without gcsfs: "Please install gcsfs ..."
        raise PathError(f"{path}: cannot open the {scheme(path)}:// filesystem ({e})") from None
    return fs, p


def join(base: str, *parts: str) -> str:
    base = os.fspath(base)
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def exists(path: str) -> bool:
    fs, p = _fs(path)
    return os.path.exists(p) if fs is None else fs.exists(p)


def isdir(path: str) -> bool:
    fs, p = _fs(path)
    return os.path.isdir(p) if fs is None else fs.isdir(p)


def makedirs(path: str) -> None:
    fs, p = _fs(path)
    if fs is None:
        os.makedirs(p, exist_ok=True)
    else:
        fs.makedirs(p, exist_ok=True)


def open(path: str, mode: str = "rb", **kw) -> IO:  # noqa: A001 - the path layer's open
    fs, p = _fs(path)
    if fs is None:
        import builtins
        return builtins.open(p, mode, **kw)
    return fs.open(p, mode, **kw)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file (a new object on object stores; local writes go through a temporary
    file and a rename, so a reader never sees half a file)."""
    fs, p = _fs(path)
    if fs is None:
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
        tmp = f"{p}.tmp{os.getpid()}"
        with __import__("builtins").open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    else:
        fs.pipe_file(p, data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def remove(path: str, recursive: bool = False) -> None:
    fs, p = _fs(path)
    if fs is None:
        if os.path.isdir(p) and recursive:
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.exists(p):
            os.remove(p)
    elif fs.exists(p):
        fs.rm(p, recursive=recursive)


def listdir(path: str) -> list[str]:
    """Names (not paths) in a directory; [] when it does not exist."""
    fs, p = _fs(path)
    if fs is None:
        return sorted(os.listdir(p)) if os.path.isdir(p) else []
    if not fs.exists(p):
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in fs.ls(p, detail=False))


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def expand(paths: str | Sequence[str], what: str = "data file") -> list[str]:
    """Files named by `paths` (each a file or a glob), in order, globs sorted. A glob matching
    nothing, a missing path or a directory is a PathError."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out: list[str] = []
    for path in map(os.fspath, paths):
        fs, p = _fs(path)
        if _has_magic(path):
            hits = sorted(__import__("glob").glob(p) if fs is None else fs.glob(p))
            if fs is not None:
                hits = [fs.unstrip_protocol(h) if not h.startswith(scheme(path) + "://") else h for h in hits]
                hits = [h for h in hits if not fs.isdir(_fs(h)[1])]
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
            raise PathError(f"{what} {path!r} is a directory; name its files (a glob such as "
                            f"{join(path, '*.parquet')!r} works)")
        out.append(path)
    return out


def local_problem(path: str, want: str = "any") -> str | None:
    """What stops a local `path` from being read, in words, or None: missing, a broken symlink,
    a symlink loop, permission denied, or (want="file"/"dir") the wrong kind."""
    p = _fs(path)[1]
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


def cache_dir() -> str:
    return os.environ.get("QWENLONG_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "qwenlong_jax"))


def local_copy(path: str) -> str:
    """A local path with the content of `path` (a file or a directory): the path itself when it
    is local, else a copy under the cache directory, keyed by the path (downloaded once; delete
    the cache directory to fetch a path whose content changed)."""
    path = os.fspath(path)
    fs, p = _fs(path)
    if fs is None:
        return p
    if not fs.exists(p):
        raise PathError(f"{path!r} does not exist")
    key = hashlib.sha256(path.encode()).hexdigest()[:16]
    dst = os.path.join(cache_dir(), "remote", key, posixpath.basename(p.rstrip("/")) or "root")
    done = dst + ".complete"
    if not os.path.exists(done):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(dst))  # same filesystem: the rename below is atomic
        target = os.path.join(tmp, "x")
        if fs.isdir(p):
            fs.get(p.rstrip("/") + "/", target, recursive=True)
        else:
            fs.get(p, target)
        if os.path.exists(dst):
            shutil.rmtree(dst, ignore_errors=True) if os.path.isdir(dst) else os.remove(dst)
        os.replace(target, dst)
        shutil.rmtree(tmp, ignore_errors=True)
        __import__("builtins").open(done, "w").close()
    return dst


def upload(local: str, remote: str) -> None:
    """Copy a local file or directory tree to `remote` (any scheme; a local copy when local)."""
    fs, p = _fs(remote)
    if fs is None:
        if os.path.abspath(local) == os.path.abspath(p):
            return
        if os.path.isdir(local):
            shutil.copytree(local, p, dirs_exist_ok=True)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
            shutil.copy(local, p)
        return
    if os.path.isdir(local):
        fs.makedirs(p, exist_ok=True)
        for root, _, files in os.walk(local):
            rel = os.path.relpath(root, local)
            for name in files:
                dst = posixpath.join(p, *(() if rel == "." else rel.split(os.sep)), name)
                fs.put_file(os.path.join(root, name), dst)
    else:
        fs.put_file(local, p)


def download(remote: str, local: str) -> None:
    """Copy `remote` (a file or directory tree) to the local path `local`."""
    fs, p = _fs(remote)
    if fs is None:
        if os.path.isdir(p):
            shutil.copytree(p, local, dirs_exist_ok=True)
        else:
            shutil.copy(p, local)
        return
    if fs.isdir(p):
        fs.get(p.rstrip("/") + "/", local, recursive=True)
    else:
        fs.get(p, local)
