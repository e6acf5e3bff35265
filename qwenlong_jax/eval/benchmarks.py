"""Benchmark loaders: each public file format -> `data.Record`s with the scorer's data_source.

    records = load_benchmark("hotpotqa", data_dir="data/eval")      # data/eval/hotpotqa.jsonl
    records = load_benchmark("docmath", path="complong_testmini.json", limit=50)

Formats (one JSON object per line; a file that starts with "[" is read as one JSON list, as
DocMath-Eval publishes its testmini split):
  docmath      DocMath-Eval testmini: question, paragraphs[str], ground_truth (number),
               optional tables[str], question_id.                 data_source "docmath"
  frames       Frames test (with fetched articles): Prompt, Answer, wiki_items[{title, text}].
                                                                   data_source "frames"
  2wikimqa, hotpotqa, musique, narrativeqa, qasper
               LongBench: context, input, answers[str], _id.      data_source "longbench_<name>"
  ours         our plain JSONL {id, document, question, answer, data_source?} (or verl rows),
               read by data.readers.
Doc-QA sources fall to the doc-QA sub_em rule (rewards.dispatch: anything that is not
docmath / long_toc_choices); "docmath" picks the numeric rule. Several gold answers (LongBench)
are kept in `extra_info["answers"]`; the runner scores max over them.

Every problem is one `BenchmarkError` line naming the benchmark, the file and (for a bad row)
the line and field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from typing import Any

from qwenlong_jax.data.prompt import build_prompt
from qwenlong_jax.data.readers import load_records
from qwenlong_jax.data.schema import DataError, Record


class EvalError(ValueError):
    """A user-facing evaluation error; its message is one line (the CLI prints only that)."""


class BenchmarkError(EvalError):
    def __init__(self, benchmark: str, path: str, problem: str):
        self.benchmark, self.path = benchmark, path
        super().__init__(f"benchmark '{benchmark}': {path}: {problem}")


class _RowError(Exception):
    """Raised by a row parser; turned into a BenchmarkError with the file and line."""


def _field(row: dict, key: str, typ: type | tuple) -> Any:
    if key not in row or row[key] is None:
        raise _RowError(f"field '{key}': missing")
    val = row[key]
    if not isinstance(val, typ) or isinstance(val, bool):
        want = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise _RowError(f"field '{key}': expected {want}, got {type(val).__name__}")
    if isinstance(val, str) and not val.strip():
        raise _RowError(f"field '{key}': empty")
    return val


def _str_list(row: dict, key: str) -> list[str]:
    val = _field(row, key, list)
    if not val or not all(isinstance(x, str) for x in val):
        raise _RowError(f"field '{key}': expected a non-empty list of strings")
    return val


def _number_text(x: int | float) -> str:
    """A DocMath gold number as plain decimal text (never "1e-05", which the parser rejects)."""
    if isinstance(x, int):
        return str(x)
    if not math.isfinite(x):
        raise _RowError(f"field 'ground_truth': not a finite number ({x})")
    text = repr(x)
    if "e" in text or "E" in text:
        text = f"{x:.12f}".rstrip("0").rstrip(".")
    return text


def _record(rid: str, data_source: str, document: str, question: str, answers: list[str], loc: str, **extra) -> Record:
    return Record(
        id=rid,
        data_source=data_source,
        prompt=build_prompt(document, question),
        ground_truth=answers[0],
        answer=answers[0],
        document=document,
        question=question,
        source=loc,
        extra_info={"answers": answers, **extra},
    )


def parse_docmath(row: dict, loc: str, index: int) -> Record:
    question = _field(row, "question", str)
    paragraphs = _str_list(row, "paragraphs")
    tables = row.get("tables") or []
    if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
        raise _RowError("field 'tables': expected a list of strings")
    gt = _field(row, "ground_truth", (int, float, str))
    answer = gt.strip() if isinstance(gt, str) else _number_text(gt)
    document = "\n\n".join(paragraphs + tables)
    rid = str(row.get("question_id", index))
    return _record(rid, "docmath", document, question, [answer], loc)


def parse_frames(row: dict, loc: str, index: int) -> Record:
    question = _field(row, "Prompt", str)
    answer = _field(row, "Answer", str).strip()
    items = _field(row, "wiki_items", list)
    parts = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise _RowError(f"field 'wiki_items[{i}]': expected an object with a string 'text'")
        title = item.get("title")
        has_title = isinstance(title, str) and title
        parts.append(f"{title}\n{item['text']}" if has_title else item["text"])
    if not parts:
        raise _RowError("field 'wiki_items': empty")
    rid = str(row.get("id", row.get("Unnamed: 0", index)))
    return _record(rid, "frames", "\n\n".join(parts), question, [answer], loc)


def _longbench(name: str) -> Callable[[dict, str, int], Record]:
    def parse(row: dict, loc: str, index: int) -> Record:
        context = _field(row, "context", str)
        question = _field(row, "input", str)
        answers = [a.strip() for a in _str_list(row, "answers")]
        rid = str(row.get("_id", index))
        return _record(rid, f"longbench_{name}", context, question, answers, loc)

    return parse


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    title: str  # column header in the paper's table
    parse: Callable[[dict, str, int], Record] | None  # None: data.readers' formats


# Paper Table 4's column order.
BENCHMARKS: dict[str, Benchmark] = {
    "docmath": Benchmark("docmath", "DocMath", parse_docmath),
    "frames": Benchmark("frames", "Frames", parse_frames),
    "2wikimqa": Benchmark("2wikimqa", "2WikiMQA", _longbench("2wikimqa")),
    "hotpotqa": Benchmark("hotpotqa", "HotpotQA", _longbench("hotpotqa")),
    "musique": Benchmark("musique", "MuSiQue", _longbench("musique")),
    "narrativeqa": Benchmark("narrativeqa", "NarrativeQA", _longbench("narrativeqa")),
    "qasper": Benchmark("qasper", "Qasper", _longbench("qasper")),
    "ours": Benchmark("ours", "Ours", None),
}


def benchmark_path(name: str, data_dir: str) -> str:
    return os.path.join(data_dir, f"{name}.jsonl")


def _rows(name: str, path: str):
    """(loc, index, row) of a JSONL file or of a file holding one JSON list."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise BenchmarkError(name, path, f"cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BenchmarkError(name, path, f"not UTF-8 at byte {e.start}") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise BenchmarkError(name, path, f"malformed JSON list: {e.msg} at line {e.lineno}") from None
        for i, row in enumerate(rows):
            yield f"{path}:[{i}]", i, row
        return
    index = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchmarkError(name, f"{path}:{lineno}", f"malformed JSON: {e.msg} at column {e.colno}") from None
        yield f"{path}:{lineno}", index, row
        index += 1


def load_benchmark(
    name: str, *, data_dir: str | None = None, path: str | None = None, limit: int | None = None
) -> list[Record]:
    """The records of benchmark `name` from `path` (default `{data_dir}/{name}.jsonl`), in file
    order, the first `limit` only when given."""
    if name not in BENCHMARKS:
        raise EvalError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    if path is None:
        if data_dir is None:
            raise EvalError(f"benchmark '{name}': no file given (set --data_dir or --bench_file)")
        path = benchmark_path(name, data_dir)
    if not os.path.isfile(path):
        raise BenchmarkError(name, path, "file not found")
    bench = BENCHMARKS[name]
    if bench.parse is None:
        try:
            records, _ = load_records(path, on_bad="error")
        except DataError as e:  # names file:line and the field
            raise BenchmarkError(name, e.loc, str(e)[len(e.loc) + 2 :]) from None
        except ValueError as e:
            raise BenchmarkError(name, path, str(e)) from None
    else:
        records = []
        seen: dict[str, str] = {}
        for loc, index, row in _rows(name, path):
            try:
                if not isinstance(row, dict):
                    raise _RowError(f"expected a JSON object, got {type(row).__name__}")
                rec = bench.parse(row, loc, index)
            except _RowError as e:
                raise BenchmarkError(name, loc, str(e)) from None
            if rec.id in seen:
                raise BenchmarkError(name, loc, f"field 'id': {rec.id!r} already at {seen[rec.id]}")
            seen[rec.id] = loc
            records.append(rec)
    if not records:
        raise BenchmarkError(name, path, "no rows")
    return records[:limit] if limit is not None else records


def gold_answers(record: Record) -> list[str]:
    """Every accepted answer (LongBench lists several; the score is the max over them)."""
    answers = record.extra_info.get("answers") if record.extra_info else None
    return list(answers) if answers else [record.ground_truth]
