"""Files on local disk or an object store through fsspec: open, read, write, list, remove.

A path with a scheme (`gs://`, `s3://`, `memory://`, ...) goes to that fsspec filesystem
(`gs://` needs the `gcsfs` package); anything else is local. Object stores have no append and no
atomic rename: writers rewrite whole small files (`write_bytes`).
"""

from __future__ import annotations

import os
import posixpath
import shutil
from typing import IO


class PathError(ValueError):
    """A user path that does not exist, is of the wrong kind, or whose filesystem is unusable."""


def is_remote(path: str) -> bool:
    path = os.fspath(path)
    return "://" in path and not path.startswith("file://")


def scheme(path: str) -> str:
    return os.fspath(path).split("://", 1)[0] if is_remote(path) else "file"


def filesystem(path: str):
    import fsspec.core

    path = os.fspath(path)
    if not is_remote(path):
        return None, os.path.expanduser(path[len("file://") :] if path.startswith("file://") else path)
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
    fs, p = filesystem(path)
    return os.path.exists(p) if fs is None else fs.exists(p)


def isdir(path: str) -> bool:
    fs, p = filesystem(path)
    return os.path.isdir(p) if fs is None else fs.isdir(p)


def makedirs(path: str) -> None:
    fs, p = filesystem(path)
    if fs is None:
        os.makedirs(p, exist_ok=True)
    else:
        fs.makedirs(p, exist_ok=True)


def open(path: str, mode: str = "rb", **kw) -> IO:  # noqa: A001 - the path layer's open
    fs, p = filesystem(path)
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
    fs, p = filesystem(path)
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
    fs, p = filesystem(path)
    if fs is None:
        if os.path.isdir(p) and recursive:
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.exists(p):
            os.remove(p)
    elif fs.exists(p):
        fs.rm(p, recursive=recursive)


def listdir(path: str) -> list[str]:
    """Names (not paths) in a directory; [] when it does not exist."""
    fs, p = filesystem(path)
    if fs is None:
        return sorted(os.listdir(p)) if os.path.isdir(p) else []
    if not fs.exists(p):
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in fs.ls(p, detail=False))
