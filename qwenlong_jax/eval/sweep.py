"""Synthetic sweep: accuracy by document length and task family (lookup, multihop, docmath,
choice from data.synthetic), as a dict, a markdown table and a PNG curve.

    python -m qwenlong_jax.evaluate --checkpoint DIR --out OUT --sweep \
        --lengths 1024,2048,4096,8192,16384 --per_length 16

    # the trainer's periodic held-out evaluation (cheap, deterministic):
    recs = sweep_records(tokenizer, [256, 512], per_length=8, seed=1234)
    res = accuracy_by_length(cfg, params, tokenizer, recs, max_new_tokens=64)
    res["by_length"][256], res["by_length_family"][256]["lookup"], flat_metrics(res)

Accuracy is the rule score (no judge: synthetic answers are exact) with "correct" meaning
score == 1, averaged over examples; documents are not truncated (the sweep measures length).
`per_length` examples per length cycle through the families, so a family's cell averages
per_length / 4 examples. Greedy by default; greedy=False samples at docs/recipe.md's temperature 0.7,
top-p 0.95 with a fixed seed, still reproducible for the same batches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from qwenlong_jax.data.rows import parse_row
from qwenlong_jax.data.schema import Record
from qwenlong_jax.data.synthetic import make_dataset
from qwenlong_jax.data.synthetic_vocab import DATA_SOURCES, FAMILIES, Family
from qwenlong_jax.eval.generation import GenerateFn, Model, SamplingSettings
from qwenlong_jax.eval.runner import run_records

_FAMILY_OF_SOURCE = {src: fam for fam, src in DATA_SOURCES.items()}
NO_TRUNCATION = 1 << 40


def sweep_records(
    tokenizer, lengths: Sequence[int], per_length: int, seed: int = 1234, families: Sequence[Family] = FAMILIES
) -> dict[int, list[Record]]:
    """`per_length` synthetic records per document length (in tokens of `tokenizer`)."""
    if per_length <= 0 or not lengths:
        raise ValueError(f"need lengths and per_length > 0, got {list(lengths)} and {per_length}")
    out = {}
    for L in lengths:
        rows = make_dataset(seed * 1_000_003 + int(L), per_length, int(L), tokenizer.count, families)
        out[int(L)] = [parse_row({**row, "id": f"L{L}-{i}"}, f"sweep:L{L}:{i}") for i, row in enumerate(rows)]
    return out


def task_family(record: Record) -> str:
    """The synthetic task family a sweep record came from (not the scorer family)."""
    return _FAMILY_OF_SOURCE.get(record.data_source, record.data_source)


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def aggregate(rows_by_length: dict[int, list[dict]], records_by_length: dict[int, list[Record]]) -> dict:
    """Accuracies from prediction rows (score == 1 is correct; mean over samples then ids)."""
    fam = {r.id: task_family(r) for recs in records_by_length.values() for r in recs}
    by_len: dict[int, float | None] = {}
    by_len_fam: dict[int, dict[str, float | None]] = {}
    by_fam: dict[str, list[float]] = {}
    count: dict[int, int] = {}
    every: list[float] = []
    for L, rows in sorted(rows_by_length.items()):
        per_id: dict[str, list[float]] = {}
        for row in rows:
            per_id.setdefault(row["id"], []).append(float(row["score"] == 1.0))
        acc_id = {i: sum(v) / len(v) for i, v in per_id.items()}  # each id has >= 1 row
        by_len[L] = _mean(list(acc_id.values()))
        count[L] = len(acc_id)
        cells: dict[str, list[float]] = {}
        for i, a in acc_id.items():
            cells.setdefault(fam[i], []).append(a)
            by_fam.setdefault(fam[i], []).append(a)
            every.append(a)
        by_len_fam[L] = {f: _mean(v) for f, v in sorted(cells.items())}
    return {
        "by_length": by_len,
        "by_length_family": by_len_fam,
        "by_family": {f: _mean(v) for f, v in sorted(by_fam.items())},
        "overall": _mean(every),
        "count": count,
    }


def _sweep_rows(
    model: Model,
    records_by_length: dict[int, list[Record]],
    sampling: SamplingSettings,
    *,
    batch_size: int,
    generate_fn,
    mesh,
    pred_dir: str | None,
    progress: bool,
) -> dict[int, list[dict]]:
    return {
        L: run_records(
            model,
            recs,
            sampling,
            max_input_tokens=NO_TRUNCATION,
            batch_size=batch_size,
            generate_fn=generate_fn,
            mesh=mesh,
            pred_path=os.path.join(pred_dir, f"len{L}.jsonl") if pred_dir else None,
            progress=progress,
            desc=f"sweep {L}",
            benchmark=f"sweep_{L}",
        )
        for L, recs in sorted(records_by_length.items())
    }


def accuracy_by_length(
    cfg,
    params,
    tokenizer,
    records_by_length: dict[int, list[Record]],
    *,
    max_new_tokens: int,
    generate_fn: GenerateFn | None = None,
    greedy: bool = True,
    batch_size: int = 16,
    mesh=None,
    seed: int = 0,
) -> dict:
    """{"by_length": {L: acc}, "by_length_family": {L: {family: acc}}, "by_family": {...},
    "overall": acc, "count": {L: n}}; accuracies in [0, 1]. No files, no progress bar."""
    sampling = (
        SamplingSettings.greedy(max_new_tokens)
        if greedy
        else SamplingSettings(max_new_tokens=max_new_tokens, seed=seed)
    )
    rows = _sweep_rows(
        Model(cfg, params, tokenizer),
        records_by_length,
        sampling,
        batch_size=batch_size,
        generate_fn=generate_fn,
        mesh=mesh,
        pred_dir=None,
        progress=False,
    )
    return aggregate(rows, records_by_length)


def flat_metrics(result: dict, prefix: str = "eval/") -> dict[str, float]:
    """Scalar metrics for a logger: acc, acc_len{L}, acc_{family}, acc_len{L}_{family}."""
    out = {f"{prefix}acc": result["overall"]}
    out.update({f"{prefix}acc_len{L}": a for L, a in result["by_length"].items()})
    out.update({f"{prefix}acc_{f}": a for f, a in result["by_family"].items()})
    for L, cells in result["by_length_family"].items():
        out.update({f"{prefix}acc_len{L}_{f}": a for f, a in cells.items()})
    return {k: v for k, v in out.items() if v is not None}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def sweep_table(result: dict) -> str:
    fams = [f for f in FAMILIES if f in result["by_family"]] + sorted(set(result["by_family"]) - set(FAMILIES))
    lines = ["| Doc tokens | " + " | ".join(fams) + " | all | n |", "|---:|" + "---:|" * (len(fams) + 2)]
    for L, acc in result["by_length"].items():
        cells = [_pct(result["by_length_family"][L].get(f)) for f in fams]
        lines.append(f"| {L} | " + " | ".join(cells) + f" | {_pct(acc)} | {result['count'][L]} |")
    cells = [_pct(result["by_family"].get(f)) for f in fams]
    lines.append("| all | " + " | ".join(cells) + f" | {_pct(result['overall'])} | {sum(result['count'].values())} |")
    return "\n".join(lines) + "\n"


def sweep_plot(result: dict, path: str, title: str = "Synthetic accuracy by document length") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = list(result["by_length"])
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    present = {f for cells in result["by_length_family"].values() for f in cells}
    for f in [f for f in FAMILIES if f in present] + sorted(present - set(FAMILIES)):
        pts = [(L, result["by_length_family"][L].get(f)) for L in lengths]
        pts = [(L, 100 * a) for L, a in pts if a is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", lw=1, alpha=0.7, label=f)
    ax.plot(lengths, [100 * result["by_length"][L] for L in lengths], marker="s", lw=2.5, color="black", label="all")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(L) for L in lengths])
    ax.set_xlabel("document tokens")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_sweep(
    model: Model,
    lengths: Sequence[int],
    per_length: int,
    out_dir: str,
    *,
    sampling: SamplingSettings,
    batch_size: int = 8,
    seed: int = 1234,
    generate_fn: GenerateFn | None = None,
    mesh=None,
    progress: bool = True,
    model_name: str = "",
) -> dict:
    """The CLI's sweep: records, resumable predictions under out_dir/sweep/, then sweep.json,
    sweep.md and sweep.png in out_dir."""
    records = sweep_records(model.tokenizer, lengths, per_length, seed)
    rows = _sweep_rows(
        model,
        records,
        sampling,
        batch_size=batch_size,
        generate_fn=generate_fn,
        mesh=mesh,
        pred_dir=os.path.join(out_dir, "sweep"),
        progress=progress,
    )
    result = aggregate(rows, records)
    with open(os.path.join(out_dir, "sweep.json"), "w") as f:
        json.dump({"model": model_name, "per_length": per_length, "seed": seed, **result}, f, indent=2)
    with open(os.path.join(out_dir, "sweep.md"), "w") as f:
        f.write(f"Synthetic accuracy (%) by document length, {model_name}\n\n")
        f.write(sweep_table(result))
    suffix = f" — {model_name}" if model_name else ""
    sweep_plot(result, os.path.join(out_dir, "sweep.png"), title=f"Synthetic accuracy by document length{suffix}")
    return result
