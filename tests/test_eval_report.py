"""Reports: the markdown table's layout (paper Table 4), extra rows from JSON/CSV, the packaged
paper averages, the PNG chart."""

import json
import pathlib

import pytest

from qwenlong_jax.eval import report
from qwenlong_jax.eval.benchmarks import EvalError
from qwenlong_jax.eval.report import TableRow, markdown_table, read_extra_rows, row_average

SUMMARY = {  # fractions, as metrics.summarize writes them
    "frames": {"score": 0.5},
    "docmath": {"score": 0.25},
    "qasper": {"score": 1.0},
    "ours": {"score": 0.125},
}


def test_markdown_table_layout():
    rows = [
        report.summary_row("tiny-rl", SUMMARY),
        TableRow("Other", {"docmath": 60.0, "musique": 40.0}),
        TableRow("Paper", {}, avg=70.7),
    ]
    # Columns: the paper's order for the benchmarks present in any row, then ours; Avg. last.
    # tiny-rl Avg.: paper benchmarks only, (25 + 50 + 100) / 3 = 58.33 -> 58.3 (ours excluded).
    # Other: (60 + 40) / 2 = 50.0. Paper: its given 70.7.
    assert markdown_table(rows) == (
        "| Model | DocMath | Frames | MuSiQue | Qasper | Ours | Avg. |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
        "| tiny-rl | 25.0 | 50.0 | – | 100.0 | 12.5 | 58.3 |\n"
        "| Other | 60.0 | – | 40.0 | – | – | 50.0 |\n"
        "| Paper | – | – | – | – | – | 70.7 |\n"
    )
    assert row_average(TableRow("only ours", {"ours": 30.0})) == 30.0
    assert row_average(TableRow("empty", {})) is None


def test_paper_rows_are_recipe_averages_only():
    rows = read_extra_rows("paper")
    assert [(r.model.split(" (")[0], r.avg) for r in rows] == [
        ("R1-Distill-Qwen-32B", 65.6),
        ("R1-Distill-Qwen-32B + SFT", 68.7),
        ("QwenLong-L1-32B, DAPO", 70.7),
        ("OpenAI-o3-mini", 70.4),
        ("Claude-3.7-Sonnet-Thinking", 70.7),
        ("Qwen3-235B-A22B", 70.6),
    ]
    assert all(r.scores == {} for r in rows)  # no invented per-benchmark numbers


def test_extra_rows_json_and_csv(tmp_path):
    j = tmp_path / "rows.json"
    j.write_text(json.dumps([{"model": "A", "scores": {"DocMath": 10, "hotpotqa": 20.5}}]))
    assert read_extra_rows(str(j)) == [TableRow("A", {"docmath": 10.0, "hotpotqa": 20.5}, None)]
    c = tmp_path / "rows.csv"
    c.write_text("model,DocMath,Frames,avg\nB,1.5,,3\nC,,2,\n")
    assert read_extra_rows(str(c)) == [TableRow("B", {"docmath": 1.5}, 3.0), TableRow("C", {"frames": 2.0}, None)]
    bad = tmp_path / "bad.csv"
    bad.write_text("model,docmath\nB,high\n")
    with pytest.raises(EvalError, match=r"bad.csv:2: column 'docmath': expected a number, got 'high'"):
        read_extra_rows(str(bad))
    with pytest.raises(EvalError, match="does not exist"):
        read_extra_rows(str(tmp_path / "none.json"))


def test_write_reports_png(tmp_path):
    paths = report.write_reports(
        str(tmp_path), "tiny", SUMMARY, read_extra_rows("paper"), meta={"settings": {"temperature": 0.7}}
    )
    png = pathlib.Path(paths["chart"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    s = json.loads(pathlib.Path(paths["summary"]).read_text())
    assert s["avg"] == pytest.approx((25 + 50 + 100) / 3) and s["settings"]["temperature"] == 0.7
    table = pathlib.Path(paths["table"]).read_text()
    assert "| tiny | 25.0 | 50.0 | 100.0 | 12.5 | 58.3 |" in table
    assert "| QwenLong-L1-32B, DAPO (paper) | – | – | – | – | 70.7 |" in table
