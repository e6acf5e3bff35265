"""tensorflow-datasets and array_record inputs (random access, no TensorFlow needed).

    records, report = tfds_records("my_docqa", split="train", data_dir=DIR)   # a prepared TFDS
    write_array_record(path, rows)                                           # rows: dicts
    records, report = array_record_records([path])                           # eager, validated
    ds = array_record_dataset([path])    # lazy grain MapDataset of Records (big corpora)

TFDS datasets must have been prepared in the array_record file format
(`file_format="array_record"`); their features are the row fields of readers.py (plain:
id/document/question/answer[/data_source/response]; verl: data_source/prompt/reward_model/...).
TFDS returns text features as bytes: they are decoded as UTF-8 here, and bytes that are not
UTF-8 are a `non_utf8` DataError naming `tfds:name/split:index` and the field. Raw array_record
files hold one JSON row per record (UTF-8 bytes). Everything goes through the same validation
and bad-record policy as the file readers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from qwenlong_jax.data.readers import validate_rows
from qwenlong_jax.data.rows import parse_row
from qwenlong_jax.data.schema import BadRecordPolicy, DataError, LoadReport, Record

if TYPE_CHECKING:
    import grain


def _decode(x: Any, loc: str, field: str) -> Any:
    """bytes -> str, numpy arrays -> lists, recursively (TFDS feature dicts)."""
    if isinstance(x, bytes):
        try:
            return x.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                loc, field or "<bytes>", "non_utf8", f"not UTF-8 at byte {e.start}: {x[e.start : e.start + 4]!r}"
            ) from None
    if isinstance(x, dict):
        return {k: _decode(v, loc, f"{field}.{k}" if field else k) for k, v in x.items()}
    if hasattr(x, "tolist") and not isinstance(x, (str, int, float)):
        x = x.tolist()  # numpy array or scalar
    if isinstance(x, list):
        return [_decode(v, loc, f"{field}[{i}]") for i, v in enumerate(x)]
    return x


def _decoded_rows(source: Sequence[Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for i in range(len(source)):
        loc = f"{prefix}:{i}"
        try:
            yield loc, _decode(source[i], loc, "")
        except DataError as err:
            yield loc, err


def tfds_records(
    name: str,
    split: str,
    data_dir: str | None = None,
    tokenizer=None,
    max_prompt_tokens: int | None = None,
    on_bad: BadRecordPolicy = "error",
) -> tuple[list[Record], LoadReport]:
    """Validated records of a prepared TFDS dataset (via `tfds.data_source`)."""
    import tensorflow_datasets as tfds  # heavy import, only when this input is used

    source = tfds.data_source(name, split=split, data_dir=data_dir)
    return validate_rows(_decoded_rows(source, f"tfds:{name}/{split}"), tokenizer, max_prompt_tokens, on_bad)


def write_array_record(path: str, rows: Iterable[dict]) -> int:
    """One JSON row per record; returns the number written."""
    from array_record.python.array_record_module import ArrayRecordWriter

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = ArrayRecordWriter(str(path), "group_size:1")  # group_size 1: cheap random access
    n = 0
    try:
        for row in rows:
            writer.write(json.dumps(row, ensure_ascii=False).encode("utf-8"))
            n += 1
    finally:
        writer.close()
    return n


class _JsonRows:
    """array_record bytes -> decoded JSON (or the DataError for that row): a random-access source
    (len and an int index, grain's RandomAccessDataSource protocol)."""

    def __init__(self, paths: Sequence[str]):
        import grain  # grain imports jax: only when this input is used

        self._src = grain.sources.ArrayRecordDataSource(list(paths))
        self._name = paths[0] if len(paths) == 1 else f"{paths[0]}+{len(paths) - 1}"

    def __len__(self) -> int:
        return len(self._src)

    def __getitem__(self, i: int) -> Any:
        loc = f"{self._name}:{i}"
        raw = self._src[i]
        try:
            return json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            return DataError(loc, "<bytes>", "non_utf8", f"not UTF-8 at byte {e.start}")
        except json.JSONDecodeError as e:
            return DataError(loc, "<json>", "malformed_json", f"malformed JSON: {e.msg}")


def array_record_records(
    paths: str | Sequence[str],
    tokenizer=None,
    max_prompt_tokens: int | None = None,
    on_bad: BadRecordPolicy = "error",
) -> tuple[list[Record], LoadReport]:
    """Validated records of array_record files written by `write_array_record`; loc is
    `file:index` (0-based record index)."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    for p in paths:
        if not os.path.exists(p):
            raise ValueError(f"data file {p!r} does not exist")
    rows = _JsonRows([str(p) for p in paths])
    return validate_rows(
        ((f"{rows._name}:{i}", rows[i]) for i in range(len(rows))), tokenizer, max_prompt_tokens, on_bad
    )


def array_record_dataset(paths: str | Sequence[str]) -> grain.MapDataset:
    """A lazy grain MapDataset of Records (validated one by one as read; a bad row raises its
    DataError when reached). Feed it to pipeline.make_dataset for shuffle/shard/epochs."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    rows = _JsonRows([str(p) for p in paths])

    def to_record(i_row: tuple[int, Any]) -> Record:
        i, row = i_row
        if isinstance(row, DataError):
            raise row
        return parse_row(row, f"{rows._name}:{i}")

    import grain

    return grain.MapDataset.source(rows).map_with_index(lambda i, row: to_record((i, row)))
