"""The predictions JSONL: one row per (record, sample), and the rows read back on resume.

A torn last line or an id with fewer samples than asked (a crash mid-write) is dropped and
redone; the file is rewritten first so appends stay line-aligned.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from qwenlong_jax.data.schema import Record

if TYPE_CHECKING:
    from qwenlong_jax.eval.runner import Response


def read_predictions(path: str, num_samples: int) -> dict[str, list[dict]]:
    """Complete (all samples present) prediction groups by id; rewrites the file without torn
    lines and incomplete groups so later appends stay aligned."""
    if not os.path.exists(path):
        return {}
    groups: dict[str, list[dict]] = {}
    dirty = False
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
                groups.setdefault(str(row["id"]), []).append(row)
            except (json.JSONDecodeError, KeyError, TypeError):
                dirty = True
            if not line.endswith("\n"):
                dirty = True
    done = {i: rs for i, rs in groups.items() if len(rs) == num_samples}
    if dirty or len(done) != len(groups):
        with open(path, "w", encoding="utf-8") as f:
            for rs in done.values():
                for row in rs:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return done


def plain_answers(record: Record) -> list[str]:
    answers = record.extra_info.get("answers") if record.extra_info else None
    return list(answers) if answers else [record.answer]


def prediction_row(benchmark: str, record: Record, sample: int, resp: Response, score, input_tokens: int,
                   full_tokens: int) -> dict:
    return {
        "benchmark": benchmark, "id": record.id, "sample": sample,
        "data_source": record.data_source, "response": resp.text,
        "score": score.score, "rule": score.rule, "judge": score.judge,
        "em": score.em, "f1": score.f1, "prediction": score.prediction,
        "gold": plain_answers(record),
        "input_tokens": input_tokens, "full_input_tokens": full_tokens,
        "truncated": full_tokens > input_tokens, "output_tokens": resp.num_tokens,
        "finish_reason": resp.finish_reason,
    }
