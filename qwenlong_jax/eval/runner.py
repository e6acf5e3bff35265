"""Batched, resumable generation and scoring of records: the core of evaluate and the sweep.

    model = generation.load_model(checkpoint_dir)           # cfg, params, tokenizer (eval/generation.py)
    rows = run_records(model, records, SamplingSettings(), max_input_tokens=120_000,
                       batch_size=8, pred_path="out/predictions/frames.jsonl", judge=None)

Per record: the paper's prompt (records carry it), chat-templated and middle-truncated on the
document to `max_input_tokens` (data.truncation.fit_prompt, docs/recipe.md "Evaluation"); records
are sorted by prompt length (characters, a free proxy: tokenising 120K-token documents happens
batch by batch under the progress bar) and cut into batches, longest first so an out-of-memory
shows up at once. Each batch is one call of `generate_fn` (default `sampling.generate`, which
buckets by padded token length again), then one scoring call (metrics.score_responses, one judge
batch), then its rows are appended to the predictions JSONL and flushed.

Resume: ids that already have all their samples in `pred_path` are skipped; a torn last line or
an id with fewer samples (a crash mid-write) is dropped and redone, the file rewritten first so
appends stay line-aligned. With temperature > 0, a batch's seed is derived from the run seed and
its first id, so samples are reproducible for the same batches but change if a resume regroups
them (greedy runs do not depend on batching).
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Sequence

from tqdm import tqdm

from qwenlong_jax.data.schema import Record
from qwenlong_jax.data.truncation import fit_prompt
from qwenlong_jax.eval.benchmarks import EvalError, gold_answers
from qwenlong_jax.eval.generation import GenerateFn, Model, Response, SamplingSettings, generate_responses
from qwenlong_jax.eval.metrics import ScoreInput, score_responses


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


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first."""
    if batch_size <= 0:
        raise EvalError(f"batch_size must be > 0, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def encode_record(record: Record, tokenizer, max_input_tokens: int) -> tuple[list[int], int]:
    """(prompt ids within the budget, the untruncated prompt length)."""
    ids = tokenizer.chat_prompt(record.prompt)
    full = len(ids)
    if full > max_input_tokens:
        ids = fit_prompt(record, tokenizer, max_input_tokens)
    return ids, full


def run_records(
    model: Model,
    records: Sequence[Record],
    sampling: SamplingSettings,
    *,
    max_input_tokens: int,
    batch_size: int,
    pred_path: str | None = None,
    judge=None,
    generate_fn: GenerateFn | None = None,
    mesh=None,
    progress: bool = True,
    desc: str = "",
    benchmark: str = "",
) -> list[dict]:
    """Prediction rows (one per (record, sample)) for `records`, in record order; new rows are
    appended to `pred_path` batch by batch and ids already there are not regenerated."""
    done = read_predictions(pred_path, sampling.num_samples) if pred_path else {}
    todo = [r for r in records if r.id not in done]
    if pred_path:
        os.makedirs(os.path.dirname(os.path.abspath(pred_path)), exist_ok=True)
    with (
        open(pred_path, "a", encoding="utf-8") if pred_path else contextlib.nullcontext(None) as sink,
        tqdm(
            total=len(records),
            initial=len(records) - len(todo),
            desc=desc or benchmark,
            disable=not progress,
            unit="doc",
        ) as bar,
    ):
        for batch in length_batches([len(r.prompt) for r in todo], batch_size):
            recs = [todo[i] for i in batch]
            encoded = [encode_record(r, model.tokenizer, max_input_tokens) for r in recs]
            seed = (sampling.seed * 1_000_003 + zlib.crc32(recs[0].id.encode())) % (2**31)
            responses = generate_responses(
                model, [ids for ids, _ in encoded], sampling, generate_fn=generate_fn, mesh=mesh, seed=seed
            )
            items = [
                ScoreInput(r.data_source, resp.text, tuple(gold_answers(r)), tuple(_plain_answers(r)), r.question)
                for r, rs in zip(recs, responses)
                for resp in rs
            ]
            scores = iter(score_responses(items, judge))
            for r, (ids, full), rs in zip(recs, encoded, responses):
                rows = [_row(benchmark, r, g, resp, next(scores), len(ids), full) for g, resp in enumerate(rs)]
                done[r.id] = rows
                if sink:
                    sink.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            if sink:
                sink.flush()
            bar.update(len(recs))
    return [row for r in records for row in done[r.id]]


def _plain_answers(record: Record) -> list[str]:
    answers = record.extra_info.get("answers") if record.extra_info else None
    return list(answers) if answers else [record.answer]


def _row(
    benchmark: str, record: Record, sample: int, resp: Response, score, input_tokens: int, full_tokens: int
) -> dict:
    return {
        "benchmark": benchmark,
        "id": record.id,
        "sample": sample,
        "data_source": record.data_source,
        "response": resp.text,
        "score": score.score,
        "rule": score.rule,
        "judge": score.judge,
        "em": score.em,
        "f1": score.f1,
        "prediction": score.prediction,
        "gold": _plain_answers(record),
        "input_tokens": input_tokens,
        "full_input_tokens": full_tokens,
        "truncated": full_tokens > input_tokens,
        "output_tokens": resp.num_tokens,
        "finish_reason": resp.finish_reason,
    }
