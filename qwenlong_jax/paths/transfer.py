"""Copies between object stores and local disk: a cached local copy for readers that need a
real file (mmap), uploads of directories written locally (exports, TensorBoard, checkpoints),
downloads.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile

from qwenlong_jax.paths.filesystem import PathError, filesystem


def cache_dir() -> str:
    return os.environ.get("QWENLONG_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "qwenlong_jax"))


def local_copy(path: str) -> str:
    """A local path with the content of `path` (a file or a directory): the path itself when it
    is local, else a copy under the cache directory, keyed by the path (downloaded once; delete
    the cache directory to fetch a path whose content changed)."""
    path = os.fspath(path)
    fs, p = filesystem(path)
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
    fs, p = filesystem(remote)
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
    fs, p = filesystem(remote)
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
