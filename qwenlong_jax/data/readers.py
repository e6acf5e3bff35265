"""Readers: verl-style rows (parquet or JSONL) and plain JSONL, validated into `Record`s.

    records, report = load_records(["train.parquet", "extra.jsonl"], tokenizer=tok,
                                   max_prompt_tokens=20_000, on_bad="error")

Row formats, detected per row:
  (a) verl (DocQA-RL-1.6K): data_source, prompt [{role, content}], reward_model.ground_truth,
      extra_info {index, ...}. The user turn's content is the prompt.
  (b) plain: {id, document, question, answer, data_source?, response?}. The prompt is the
      paper's template; the ground truth is the bare answer (the scorer takes bare answers for
      doc-QA and docmath), for multiple choice "The correct answer is (X)".
Every problem raises a one-line `DataError` naming file:line and the field, or with
on_bad="skip" is counted per reason in the `LoadReport`. Multiple-choice ground truths that the
scorer cannot parse are rejected here (the reference would score them 0 silently).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Iterable, Iterator, Sequence

from qwenlong_jax import paths as paths_lib
from qwenlong_jax.data.prompt import build_prompt, split_prompt
from qwenlong_jax.data.schema import BadRecordPolicy, DataError, LoadReport, Record
# The scorer's own dispatch and letter parser: a ground truth is accepted here exactly when the
# scorer can read it.
from qwenlong_jax.rewards.choice import extract_letter
from qwenlong_jax.rewards.dispatch import family_of

DEFAULT_DATA_SOURCE = "docqa"  # not a reference name: REWARD_RULES falls back to doc-QA
_MC_PLAIN = re.compile(r"\(?([A-D])\)?\.?")  # plain-JSONL multiple-choice answer: B, (B), B.
_ANSWER_PHRASE = "the answer is"


def _type_name(x: Any) -> str:
    return type(x).__name__


def _get(row: dict, key: str, typ: type | tuple, loc: str, prefix: str = "",
         required: bool = True) -> Any:
    name = prefix + key
    if key not in row or row[key] is None:
        if required:
            raise DataError(loc, name, "missing_field", "missing")
        return None
    val = row[key]
    if not isinstance(val, typ) or isinstance(val, bool):
        want = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise DataError(loc, name, "wrong_type", f"expected {want}, got {_type_name(val)}")
    return val


def _nonempty(val: str, loc: str, field: str) -> str:
    if not val.strip():
        raise DataError(loc, field, "empty", "empty")
    return val


def _plain_answer(ground_truth: str) -> str:
    """The bare answer of an answer-form ground truth (display and SFT only; scoring uses the
    ground truth itself)."""
    i = ground_truth.lower().rfind(_ANSWER_PHRASE)
    ans = ground_truth[i + len(_ANSWER_PHRASE):] if i >= 0 else ground_truth
    return ans.strip().rstrip(".").strip()


def parse_row(row: Any, loc: str) -> Record:
    """One decoded row -> Record, or DataError."""
    if not isinstance(row, dict):
        raise DataError(loc, "<row>", "not_an_object", f"expected a JSON object, got {_type_name(row)}")
    if "prompt" in row:
        return _parse_verl(row, loc)
    if "document" in row:
        return _parse_plain(row, loc)
    raise DataError(loc, "document", "missing_field",
                    "missing (a row needs 'document' (plain) or 'prompt' (verl))")


def _parse_verl(row: dict, loc: str) -> Record:
    data_source = _nonempty(_get(row, "data_source", str, loc), loc, "data_source")
    messages = _get(row, "prompt", list, loc)
    roles = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise DataError(loc, f"prompt[{i}]", "wrong_type", f"expected object, got {_type_name(m)}")
        roles.append(_get(m, "role", str, loc, f"prompt[{i}]."))
        _get(m, "content", str, loc, f"prompt[{i}].")
    # The recipe's prompt is one user turn with no system prompt; anything else would be
    # silently changed by chat_prompt, so it is refused.
    if roles != ["user"]:
        raise DataError(loc, "prompt", "wrong_type",
                        f"expected exactly one message with role 'user', got roles {roles}")
    user = _nonempty(messages[0]["content"], loc, "prompt[0].content")
    rm = _get(row, "reward_model", dict, loc)
    gt = _nonempty(_get(rm, "ground_truth", str, loc, "reward_model."), loc,
                   "reward_model.ground_truth")
    is_choice = family_of(data_source) == "choice"
    if is_choice and extract_letter(gt) is None:
        raise DataError(loc, "reward_model.ground_truth", "bad_ground_truth",
                        f"multiple-choice ground truth {gt[:40]!r} lacks 'The correct answer is (X)'")
    extra = _get(row, "extra_info", dict, loc, required=False) or {}
    split = split_prompt(user)
    document, question = split if split else (None, None)
    if split is not None:
        _nonempty(document, loc, "prompt.document")
    rid = str(extra["index"]) if "index" in extra else loc
    answer = extract_letter(gt) if is_choice else _plain_answer(gt)
    return Record(id=rid, data_source=data_source, prompt=user, ground_truth=gt, answer=answer,
                  document=document, question=question, source=loc, extra_info=extra)


def _parse_plain(row: dict, loc: str) -> Record:
    rid = _get(row, "id", (str, int), loc)
    document = _nonempty(_get(row, "document", str, loc), loc, "document")
    question = _nonempty(_get(row, "question", str, loc), loc, "question")
    answer = _get(row, "answer", (str, int, float), loc)
    answer = _nonempty(answer if isinstance(answer, str) else repr(answer), loc, "answer").strip()
    data_source = _get(row, "data_source", str, loc, required=False) or DEFAULT_DATA_SOURCE
    response = _get(row, "response", str, loc, required=False)
    ground_truth = answer
    if family_of(data_source) == "choice":
        m = _MC_PLAIN.fullmatch(answer)
        letter = m.group(1) if m else extract_letter(answer)
        if letter is None:
            raise DataError(loc, "answer", "bad_ground_truth",
                            f"multiple-choice answer {answer[:40]!r} is not a letter A-D "
                            "or 'The correct answer is (X)'")
        answer, ground_truth = letter, f"The correct answer is ({letter})"
    return Record(id=str(rid), data_source=data_source, prompt=build_prompt(document, question),
                  ground_truth=ground_truth, answer=answer, document=document,
                  question=question, response=response, source=loc)


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
            yield f"{path}:0", DataError(f"{path}:0", "<file>", "unreadable",
                                         f"cannot read parquet: {str(e).splitlines()[0]}")
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
                yield loc, DataError(loc, "<bytes>", "non_utf8",
                                     f"not UTF-8 at byte {e.start}: {raw[e.start:e.start + 4]!r}")
                continue
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) are not rows
            try:
                yield loc, json.loads(line)
            except json.JSONDecodeError as e:
                yield loc, DataError(loc, "<json>", "malformed_json",
                                     f"malformed JSON: {e.msg} at column {e.colno}")


def load_records(paths: str | Sequence[str], tokenizer=None, max_prompt_tokens: int | None = None,
                 on_bad: BadRecordPolicy = "error") -> tuple[list[Record], LoadReport]:
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


def validate_rows(rows: Iterable[tuple[str, Any]], tokenizer=None,
                  max_prompt_tokens: int | None = None, on_bad: BadRecordPolicy = "error",
                  ) -> tuple[list[Record], LoadReport]:
    """(loc, row-or-DataError) pairs -> records and report, under the bad-record policy;
    shared by every input format (files, array_record, tensorflow-datasets)."""
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    if max_prompt_tokens is not None and tokenizer is None:
        raise ValueError("max_prompt_tokens needs a tokenizer (lengths are counted in tokens)")
    report, records, seen = LoadReport(), [], {}
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
        raise DataError(rec.source, field, "too_long",
                        f"prompt has {n} tokens, over the limit of {max_prompt_tokens}")
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
