"""Batched, resumable generation and scoring of records: the core of evaluate and the sweep.

    model = load_model(checkpoint_dir)                      # cfg, params, tokenizer
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
import dataclasses
import json
import os
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tqdm import tqdm

from qwenlong_jax import paths
from qwenlong_jax.data.schema import Record
from qwenlong_jax.data.truncation import fit_prompt
from qwenlong_jax.eval.benchmarks import EvalError, gold_answers
from qwenlong_jax.eval.metrics import ScoreInput, score_responses
from qwenlong_jax.rewards.segment import strip_eos

if TYPE_CHECKING:
    from qwenlong_jax.data.tokenizer import Tokenizer
    from qwenlong_jax.models import ModelConfig

GenerateFn = Callable[..., list]


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """docs/recipe.md's evaluation sampling by default; `greedy()` for deterministic runs."""

    max_new_tokens: int = 10_000
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    num_samples: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens <= 0 or self.num_samples <= 0:
            raise EvalError(
                f"max_new_tokens and num_samples must be > 0, got {self.max_new_tokens} and {self.num_samples}"
            )
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise EvalError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature} and {self.top_p}")

    @classmethod
    def greedy(cls, max_new_tokens: int, num_samples: int = 1) -> SamplingSettings:
        return cls(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, top_k=0, num_samples=num_samples)


@dataclasses.dataclass(frozen=True)
class Model:
    cfg: ModelConfig
    params: dict = dataclasses.field(repr=False)
    tokenizer: Tokenizer = dataclasses.field(repr=False)


def load_model(checkpoint: str, tokenizer_path: str | None = None, dtype: str = "float32", mesh=None) -> Model:
    import jax.numpy as jnp

    from qwenlong_jax import models
    from qwenlong_jax.data.tokenizer import find_tokenizer, load_tokenizer

    problem = paths.local_problem(checkpoint, "dir") if not paths.is_remote(checkpoint) else None
    if problem and problem != "does not exist":  # a symlink loop, permission, a file: say so
        raise EvalError(f"checkpoint {checkpoint!r} {problem}")
    if not os.path.isfile(os.path.join(checkpoint, "config.json")):
        hint = (
            f"; a training workdir? its export is {os.path.join(checkpoint, 'hf')}"
            if os.path.isfile(os.path.join(checkpoint, "hf", "config.json"))
            else ""
        )
        raise EvalError(
            f"checkpoint {checkpoint!r}: no config.json (expected an HF model "
            f"directory or the trainer's hf/ export){hint}"
        )
    tok_path = find_tokenizer(tokenizer_path, checkpoint)
    if tok_path is None:
        raise EvalError(f"checkpoint {checkpoint!r}: no tokenizer/ or tokenizer.json in it; pass --tokenizer")
    try:
        tokenizer = load_tokenizer(tok_path)
        cfg, params = models.load_hf_checkpoint(checkpoint, dtype=jnp.dtype(dtype), mesh=mesh)
    except (ValueError, OSError) as e:
        raise EvalError(f"checkpoint {checkpoint!r}: {str(e).splitlines()[0]}") from None
    if tokenizer.vocab_size > cfg.vocab_size:
        raise EvalError(
            f"checkpoint {checkpoint!r}: tokenizer has {tokenizer.vocab_size} ids, "
            f"more than the model's vocab_size {cfg.vocab_size}"
        )
    return Model(cfg, params, tokenizer)


@dataclasses.dataclass(frozen=True)
class Response:
    text: str  # decoded, eos removed
    num_tokens: int  # generated tokens, eos included
    finish_reason: str


def generate_responses(
    model: Model,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingSettings,
    *,
    generate_fn: GenerateFn | None = None,
    mesh=None,
    seed: int | None = None,
) -> list[list[Response]]:
    """`sampling.num_samples` decoded responses per prompt (the sampler contract of docs/design.md)."""
    if generate_fn is None:
        from qwenlong_jax import sampling as sampling_lib

        generate_fn = sampling_lib.generate
    tok = model.tokenizer
    out = generate_fn(
        model.cfg,
        model.params,
        [list(p) for p in prompts],
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        num_samples=sampling.num_samples,
        eos_ids=tuple(tok.eos_ids),
        seed=sampling.seed if seed is None else seed,
        **({"mesh": mesh} if mesh is not None else {}),
    )
    if len(out) != len(prompts):
        raise ValueError(f"generate returned {len(out)} results for {len(prompts)} prompts")
    eos = set(tok.eos_ids)
    result = []
    for samples in out:
        rs = []
        for s in samples:
            ids = list(s.tokens)
            if ids and ids[-1] in eos:  # the eos token is not part of the answer text
                ids = ids[:-1]
            rs.append(Response(strip_eos(tok.decode(ids), tok.eos_text), len(s.tokens), s.finish_reason))
        result.append(rs)
    return result


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
