"""Reports: the JSON summary, a markdown table in the paper's layout, a PNG bar chart.

    rows = [summary_row(model_name, summary)] + read_extra_rows("paper")
    print(markdown_table(rows)); bar_chart(rows, "out/scores.png")

Table layout (paper Table 4): one row per model, one column per benchmark in the paper's order
(DocMath, Frames, 2WikiMQA, HotpotQA, MuSiQue, NarrativeQA, Qasper; then any other such as our
own set), then "Avg."; scores are percentages with one decimal, "–" where a row has no number.
Avg. is the row's own given average if it has one (the paper's rows: paper_table4.json holds
only the averages docs/recipe.md reports), else the mean over the paper benchmarks the row has (our
own set is not averaged in; with none of the seven, the mean over what it has).

Extra-row files: JSON `{"rows": [{"model": ..., "scores": {benchmark: pct}, "avg": pct}]}` (or
the bare list), or CSV with a `model` column, benchmark columns (names or titles) and `avg`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Sequence

from qwenlong_jax.eval.benchmarks import BENCHMARKS, EvalError

PAPER_BENCHMARKS: tuple[str, ...] = ("docmath", "frames", "2wikimqa", "hotpotqa", "musique", "narrativeqa", "qasper")
PAPER_TABLE = os.path.join(os.path.dirname(__file__), "paper_table4.json")
MISSING = "–"


@dataclasses.dataclass(frozen=True)
class TableRow:
    model: str
    scores: dict  # benchmark name -> percent
    avg: float | None = None  # a given average (paper rows); None: computed


def row_average(row: TableRow) -> float | None:
    if row.avg is not None:
        return row.avg
    paper = [row.scores[b] for b in PAPER_BENCHMARKS if b in row.scores]
    vals = paper or list(row.scores.values())
    return sum(vals) / len(vals) if vals else None


def summary_row(model: str, summary: dict, metric: str = "score") -> TableRow:
    """Our row from the JSON summary's per-benchmark metrics (fractions -> percent)."""
    return TableRow(model, {b: 100.0 * m[metric] for b, m in summary.items() if metric in m})


def table_columns(rows: Sequence[TableRow]) -> list[str]:
    present = {b for r in rows for b in r.scores}
    known = [b for b in BENCHMARKS if b in present]
    return known + sorted(present - set(known))


def _title(bench: str) -> str:
    return BENCHMARKS[bench].title if bench in BENCHMARKS else bench


def _fmt(x: float | None) -> str:
    return MISSING if x is None else f"{x:.1f}"


def markdown_table(rows: Sequence[TableRow], columns: Sequence[str] | None = None) -> str:
    cols = list(columns) if columns is not None else table_columns(rows)
    lines = [
        "| Model | " + " | ".join([_title(c) for c in cols] + ["Avg."]) + " |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for r in rows:
        cells = [_fmt(r.scores.get(c)) for c in cols] + [_fmt(row_average(r))]
        lines.append(f"| {r.model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _number(x, where: str) -> float | None:
    if x is None or x == "":
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        raise EvalError(f"{where}: expected a number, got {x!r}") from None


def _bench_key(name: str) -> str:
    for key, b in BENCHMARKS.items():
        if name.strip().lower() in (key, b.title.lower()):
            return key
    return name.strip()


def read_extra_rows(path: str) -> list[TableRow]:
    """Rows from a JSON or CSV file; "paper" is the packaged paper_table4.json."""
    path = PAPER_TABLE if path == "paper" else path
    if not os.path.isfile(path):
        raise EvalError(f"extra rows file {path!r} does not exist")
    rows = []
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "model" not in reader.fieldnames:
                raise EvalError(f"{path}: CSV needs a 'model' column")
            for i, rec in enumerate(reader, start=2):
                scores = {
                    _bench_key(k): _number(v, f"{path}:{i}: column '{k}'")
                    for k, v in rec.items()
                    if k not in ("model", "avg")
                }
                rows.append(
                    TableRow(
                        rec["model"],
                        {k: v for k, v in scores.items() if v is not None},
                        _number(rec.get("avg"), f"{path}:{i}: column 'avg'"),
                    )
                )
        return rows
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise EvalError(f"{path}: malformed JSON: {e.msg} at line {e.lineno}") from None
    items = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise EvalError(f'{path}: expected a list of rows or {{"rows": [...]}}')
    for i, item in enumerate(items):
        where = f"{path}: rows[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("model"), str):
            raise EvalError(f"{where}: expected an object with a string 'model'")
        scores = item.get("scores") or {}
        if not isinstance(scores, dict):
            raise EvalError(f"{where}: 'scores' must be an object")
        rows.append(
            TableRow(
                item["model"],
                {_bench_key(k): _number(v, f"{where}.scores.{k}") for k, v in scores.items() if v is not None},
                _number(item.get("avg"), f"{where}.avg"),
            )
        )
    return rows


def bar_chart(rows: Sequence[TableRow], path: str, title: str = "Long-document QA") -> None:
    """Grouped bars: one group per benchmark plus Avg., one bar per row that has the number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = table_columns(rows)
    groups = [_title(c) for c in cols] + ["Avg."]
    values = [[r.scores.get(c) for c in cols] + [row_average(r)] for r in rows]
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 2), 4.5))
    for k, (r, vals) in enumerate(zip(rows, values)):
        xs = [g + (k - (len(rows) - 1) / 2) * width for g, v in enumerate(vals) if v is not None]
        ys = [v for v in vals if v is not None]
        bars = ax.bar(xs, ys, width, label=r.model)
        if len(rows) <= 4:
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(groups)), groups, rotation=20)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(
    out_dir: str, model: str, summary: dict, extra_rows: Sequence[TableRow] = (), meta: dict | None = None
) -> dict[str, str]:
    """summary.json, table.md and scores.png under `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        k: os.path.join(out_dir, f)
        for k, f in (("summary", "summary.json"), ("table", "table.md"), ("chart", "scores.png"))
    }
    rows = [summary_row(model, summary)] + list(extra_rows)
    with open(paths["summary"], "w") as f:
        json.dump(
            {"model": model, "benchmarks": summary, "avg": row_average(rows[0]), **(meta or {})},
            f,
            indent=2,
            sort_keys=True,
        )
    with open(paths["table"], "w") as f:
        f.write(markdown_table(rows))
        f.write(
            "\nScores in %: max(rule, judge), mean over samples. Avg. over the paper's seven "
            "benchmarks a row has; paper rows give their reported average only.\n"
        )
    bar_chart(rows, paths["chart"])
    return paths
