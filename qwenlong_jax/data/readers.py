"""Readers: verl-style rows (parquet or JSONL) and plain JSONL, validated into `Record`s.

    records, report = load_records(["train.parquet", "extra.jsonl"], tokenizer=tok,
                                   max_prompt_tokens=20_000, on_bad="error")

Row formats (verl-style and plain, detected per row): data/rows.py.
Every problem raises a one-line `DataError` naming file:line and the field, or with
on_bad="skip" is counted per reason in the `LoadReport`. Multiple-choice ground truths that the
scorer cannot parse are rejected here (the reference would score them 0 silently).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from qwenlong_jax import paths as paths_lib
from qwenlong_jax.data.rows import parse_row
from qwenlong_jax.data.schema import BadRecordPolicy, DataError, LoadReport, Record


def read_rows(path: str) -> Iterator[tuple[str, Any]]:
    """(loc, row-or-DataError) for each row of a .jsonl/.json(l) or .parquet file, local or on
    an object store (qwenlong_jax/paths/); loc is "file:line" (1-based; the row number for parquet).
    A file with no rows at all (empty, blank lines only, a 0-row parquet) raises DataError
    whatever the bad-record policy: it is a wrong file, not a bad row."""
    n = 0
    for item in _read_rows(path):
        n += 1
        yield item
    if n == 0:
        raise DataError(path, "<file>", "empty", "the file has no rows (empty, blank lines only, or a 0-row table)")


def _read_rows(path: str) -> Iterator[tuple[str, Any]]:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            with paths_lib.open(path, "rb") as f:
                rows = pq.read_table(f).to_pylist()
        except Exception as e:  # pyarrow raises many types; one line naming the file
            yield (
                f"{path}:0",
                DataError(f"{path}:0", "<file>", "unreadable", f"cannot read parquet: {str(e).splitlines()[0]}"),
            )
            return
        for i, row in enumerate(rows):
            yield f"{path}:{i + 1}", row
        return
    with paths_lib.open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            loc = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield (
                    loc,
                    DataError(
                        loc, "<bytes>", "non_utf8", f"not UTF-8 at byte {e.start}: {raw[e.start : e.start + 4]!r}"
                    ),
                )
                continue
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) are not rows
            try:
                yield loc, json.loads(line)
            except json.JSONDecodeError as e:
                yield loc, DataError(loc, "<json>", "malformed_json", f"malformed JSON: {e.msg} at column {e.colno}")


def load_records(
    paths: str | Sequence[str], tokenizer=None, max_prompt_tokens: int | None = None, on_bad: BadRecordPolicy = "error"
) -> tuple[list[Record], LoadReport]:
    """Read and validate every row of `paths` (.jsonl or .parquet files or globs of them,
    local or object-store paths).

    With a tokenizer, each record gets `num_prompt_tokens` (the chat prompt's length), and rows
    above `max_prompt_tokens` are bad ("too_long"; training filters over-long inputs, evaluation
    should load without the limit and truncate, see truncation.py). A missing file, a
    directory or a glob matching nothing is a paths.PathError naming it.
    """
    files = paths_lib.expand(paths)  # PathError (a ValueError), one line naming the path
    rows = (item for path in files for item in read_rows(str(path)))
    return validate_rows(rows, tokenizer, max_prompt_tokens, on_bad)


def validate_rows(
    rows: Iterable[tuple[str, Any]],
    tokenizer=None,
    max_prompt_tokens: int | None = None,
    on_bad: BadRecordPolicy = "error",
) -> tuple[list[Record], LoadReport]:
    """(loc, row-or-DataError) pairs -> records and report, under the bad-record policy;
    shared by every input format (files, array_record, tensorflow-datasets)."""
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    if max_prompt_tokens is not None and tokenizer is None:
        raise ValueError("max_prompt_tokens needs a tokenizer (lengths are counted in tokens)")
    report, records = LoadReport(), []
    seen: dict[str, str] = {}
    for loc, row in rows:
        report.read += 1
        try:
            if isinstance(row, DataError):
                raise row
            rec = parse_row(row, loc)
            field = "prompt" if "prompt" in row else "document"  # what holds the length
            rec = _measure(rec, tokenizer, max_prompt_tokens, field)
            if rec.id in seen:
                raise DataError(loc, "id", "duplicate_id", f"id {rec.id!r} already at {seen[rec.id]}")
            seen[rec.id] = loc
        except DataError as err:
            if on_bad == "error":
                raise
            report.add_skip(err)
            continue
        records.append(rec)
        report.kept += 1
    return records, report


def _measure(rec: Record, tokenizer, max_prompt_tokens: int | None, field: str) -> Record:
    if tokenizer is None:
        return rec
    n = len(tokenizer.chat_prompt(rec.prompt))
    if max_prompt_tokens is not None and n > max_prompt_tokens:
        raise DataError(rec.source, field, "too_long", f"prompt has {n} tokens, over the limit of {max_prompt_tokens}")
    return dataclasses.replace(rec, num_prompt_tokens=n)


def write_jsonl(path: str, rows: Iterable[dict]) -> int:
    """Write rows as UTF-8 JSONL; returns the number written."""
    n = 0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
