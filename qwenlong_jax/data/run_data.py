"""The run's records: files (verl-style or plain JSONL/parquet) or the synthetic default,
measured in tokens and split into phases; and the held-out sets by context length.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Sequence

from qwenlong_jax.config import Config, ConfigError, PhaseConfig, PhaseKind
from qwenlong_jax.data import readers, synthetic
from qwenlong_jax.data.prompt import build_prompt
from qwenlong_jax.data.schema import Record


@dataclasses.dataclass
class RunData:
    train: list[Record]  # RL pool (all phases)
    sft: list[Record]  # records with a response
    heldout: dict[int, list[Record]]  # eval length -> records
    report: str = ""  # bad-record summary
    # Rows left out, by reason: "skipped/<reason>" (data.bad_records="skip") and
    # "dropped/too_long" (longer than every phase of their kind admits). Reported in
    # metrics, summary.json and at the end of the run.
    counts: dict[str, int] = dataclasses.field(default_factory=dict)


def _too_long(recs: list[Record], phases: Sequence[PhaseConfig]) -> int:
    if not phases:
        return 0
    top = max(p.max_input for p in phases)
    return sum(1 for r in recs if (r.num_prompt_tokens or 0) > top)


def _synthetic_records(rows: list[dict], tokenizer, tag: str) -> list[Record]:
    recs, _ = readers.validate_rows(((f"<synthetic:{tag}>:{i + 1}", row) for i, row in enumerate(rows)), tokenizer)
    return recs


def template_overhead(tokenizer) -> int:
    """Chat-prompt tokens around an empty document and a typical question."""
    return len(tokenizer.chat_prompt(build_prompt("", "What is the code of the boss of KIRA ?")))


def synthetic_doc_lengths(phase: PhaseConfig, overhead: int, n: int) -> list[int]:
    lo = max(phase.min_input - overhead + 8, 48)
    hi = max(phase.max_input - overhead - 4, lo)
    return [int(lo + (hi - lo) * (i + 0.5) / n) for i in range(n)]


# Chat template, question and answer options around a synthetic held-out document of L tokens
# (an upper bound: 65 tokens with the shipped tokenizer; tests/test_plan.py checks it).
HELDOUT_PROMPT_OVERHEAD = 128
SYNTHETIC_BYTES_PER_TOKEN = 16  # host bytes a synthetic record keeps per prompt token (~9 measured, peak ~10)


def host_available_bytes() -> int | None:
    """The host's available physical memory (Linux), None where the OS does not say."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_synthetic_fits(cfg: Config) -> None:
    """One ConfigError line, before generating anything, when the synthetic data (every phase's
    data.synthetic_per_phase examples of up to its max_input tokens, plus the held-out sets) would
    not fit the host's available memory: every process builds all of it."""
    d = cfg.data
    tokens = d.synthetic_per_phase * sum(p.max_input for p in cfg.phases)
    tokens += d.eval_per_length * sum(n + HELDOUT_PROMPT_OVERHEAD for n in d.eval_lengths)
    need, avail = tokens * SYNTHETIC_BYTES_PER_TOKEN, host_available_bytes()
    if avail is not None and need > avail:
        raise ConfigError(
            f"data.synthetic_per_phase={d.synthetic_per_phase}: the synthetic data would take ~{need / 2**30:.1f} GiB "
            f"of host memory ({tokens:,} prompt tokens over the phases and held-out sets), "
            f"{avail / 2**30:.1f} GiB available; lower data.synthetic_per_phase or data.eval_per_length, "
            "or train on data.train_files"
        )


def load_run_data(cfg: Config, tokenizer) -> RunData:
    d = cfg.data
    if d.train_files:
        train, rep = readers.load_records(d.train_files, tokenizer, on_bad=d.bad_records)
        sft_files = d.sft_files or d.train_files
        sft, rep2 = readers.load_records(sft_files, tokenizer, on_bad=d.bad_records)
        sft = [r for r in sft if r.response]
        heldout = {}
        counts: collections.Counter = collections.Counter()
        reports = [rep] + ([rep2] if tuple(sft_files) != tuple(d.train_files) else [])
        if d.eval_files:
            ev, rep3 = readers.load_records(d.eval_files, tokenizer, on_bad=d.bad_records)
            reports.append(rep3)
            for ph in cfg.phases:
                if ph.kind == PhaseKind.RL:
                    heldout[ph.max_input] = [r for r in ev if ph.min_input < r.num_prompt_tokens <= ph.max_input]
        for r in reports:
            counts.update({f"skipped/{k}": v for k, v in r.skipped.items()})
        counts["dropped/too_long"] = _too_long(train, [p for p in cfg.phases if p.kind == PhaseKind.RL]) + (
            _too_long(sft, [p for p in cfg.phases if p.kind == PhaseKind.SFT])
            if tuple(sft_files) != tuple(d.train_files)
            else 0
        )
        text = "; ".join(r.summary() for r in reports if r.skipped)
        return RunData(train, sft, heldout, text, {k: v for k, v in sorted(counts.items()) if v})
    check_synthetic_fits(cfg)
    overhead = template_overhead(tokenizer)
    train, sft = [], []
    for k, ph in enumerate(cfg.phases):
        lengths = synthetic_doc_lengths(ph, overhead, 8)
        rows = synthetic.make_dataset(
            d.synthetic_seed + 1000 * k,
            d.synthetic_per_phase,
            lengths,
            tokenizer.count,
            families=d.synthetic_families,
            attributes=d.synthetic_attributes,
        )
        for row in rows:
            row["id"] = f"{ph.name}-{row['id']}"
        recs = _synthetic_records(rows, tokenizer, ph.name)
        (sft if ph.kind == PhaseKind.SFT else train).extend(recs)
    heldout = {}
    for n in d.eval_lengths:
        rows = synthetic.make_dataset(
            d.synthetic_seed + 7_000_000 + n,
            d.eval_per_length,
            n,
            tokenizer.count,
            families=d.synthetic_families,
            attributes=d.synthetic_attributes,
        )
        for row in rows:
            row["id"] = f"heldout{n}-{row['id']}"
        heldout[n] = _synthetic_records(rows, tokenizer, f"heldout{n}")
    return RunData(train, sft, heldout)
