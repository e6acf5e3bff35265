"""One path layer for every path a user gives: local disk and object stores, through fsspec.

    paths.expand(["gs://bucket/data/*.parquet", "local.jsonl"])   # globs -> sorted file list
    with paths.open("gs://bucket/x.jsonl", "rb") as f: ...
    local = paths.local_copy("gs://bucket/ckpt")   # for readers that need a real file (mmap)

A path with a scheme (`gs://`, `s3://`, `memory://`, ...) goes to that fsspec filesystem
(`gs://` needs the `gcsfs` package); anything else is local. Errors are `PathError`, one line
naming the path. Object stores have no append and no atomic rename: writers here rewrite
whole small files (metrics, summary) and upload directories written locally (exports,
TensorBoard, checkpoints for schemes orbax cannot write itself; see checkpoint.py).

Modules: filesystem (open, read, write, list, remove), checks (globs, readable local paths),
transfer (local copies, uploads, downloads).
"""

from qwenlong_jax.paths.checks import check_readable, expand, local_problem
from qwenlong_jax.paths.filesystem import (
    PathError,
    exists,
    is_remote,
    isdir,
    join,
    listdir,
    makedirs,
    open,
    read_bytes,
    read_text,
    remove,
    scheme,
    write_bytes,
    write_text,
)
from qwenlong_jax.paths.transfer import cache_dir, download, local_copy, upload

__all__ = [
    "PathError",
    "cache_dir",
    "check_readable",
    "download",
    "exists",
    "expand",
    "is_remote",
    "isdir",
    "join",
    "listdir",
    "local_copy",
    "local_problem",
    "makedirs",
    "open",
    "read_bytes",
    "read_text",
    "remove",
    "scheme",
    "upload",
    "write_bytes",
    "write_text",
]
