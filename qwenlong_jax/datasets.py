"""The run's records: files (verl-style or plain JSONL/parquet) or the synthetic default,
measured in tokens and split into phases; and the held-out sets by context length.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from qwenlong_jax.config import Config, PhaseConfig
from qwenlong_jax.data import readers, synthetic
from qwenlong_jax.data.prompt import build_prompt
from qwenlong_jax.data.schema import Record


@dataclasses.dataclass
class RunData:
    train: list[Record]  # RL pool (all phases)
    sft: list[Record]  # records with a response
    heldout: dict[int, list[Record]]  # eval length -> records
    report: str = ""  # bad-record summary


def _synthetic_records(rows: list[dict], tokenizer, tag: str) -> list[Record]:
    recs, _ = readers.validate_rows(((f"<synthetic:{tag}>:{i + 1}", row) for i, row in enumerate(rows)),
                                    tokenizer)
    return recs


def template_overhead(tokenizer) -> int:
    """Chat-prompt tokens around an empty document and a typical question."""
    return len(tokenizer.chat_prompt(build_prompt("", "What is the code of the boss of KIRA ?")))


def synthetic_doc_lengths(phase: PhaseConfig, overhead: int, n: int) -> list[int]:
    lo = max(phase.min_input - overhead + 8, 48)
    hi = max(phase.max_input - overhead - 4, lo)
    return [int(lo + (hi - lo) * (i + 0.5) / n) for i in range(n)]


def load_run_data(cfg: Config, tokenizer) -> RunData:
    d = cfg.data
    if d.train_files:
        train, rep = readers.load_records(d.train_files, tokenizer, on_bad=d.bad_records)
        sft_files = d.sft_files or d.train_files
        sft, rep2 = readers.load_records(sft_files, tokenizer, on_bad=d.bad_records)
        sft = [r for r in sft if r.response]
        heldout = {}
        if d.eval_files:
            ev, _ = readers.load_records(d.eval_files, tokenizer, on_bad=d.bad_records)
            for ph in cfg.phases:
                if ph.kind == "rl":
                    heldout[ph.max_input] = [r for r in ev if ph.min_input < r.num_prompt_tokens <= ph.max_input]
        return RunData(train, sft, heldout, rep.summary() if rep.skipped else "")
    overhead = template_overhead(tokenizer)
    train, sft = [], []
    for k, ph in enumerate(cfg.phases):
        lengths = synthetic_doc_lengths(ph, overhead, 8)
        rows = synthetic.make_dataset(d.synthetic_seed + 1000 * k, d.synthetic_per_phase, lengths,
                                      tokenizer.count, families=d.synthetic_families,
                                      attributes=d.synthetic_attributes)
        for r in rows:
            r["id"] = f"{ph.name}-{r['id']}"
        recs = _synthetic_records(rows, tokenizer, ph.name)
        (sft if ph.kind == "sft" else train).extend(recs)
    heldout = {}
    for n in d.eval_lengths:
        rows = synthetic.make_dataset(d.synthetic_seed + 7_000_000 + n, d.eval_per_length, n, tokenizer.count,
                                      families=d.synthetic_families, attributes=d.synthetic_attributes)
        for r in rows:
            r["id"] = f"heldout{n}-{r['id']}"
        heldout[n] = _synthetic_records(rows, tokenizer, f"heldout{n}")
    return RunData(train, sft, heldout)
