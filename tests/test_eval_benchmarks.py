"""Benchmark loaders: every public format -> Records with the scorer's data_source and the
paper's prompt; a missing or malformed file is one error line naming the benchmark and path."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwenlong_jax.cli import evaluate
from qwenlong_jax.data import build_prompt
from qwenlong_jax.eval.benchmarks import BenchmarkError, EvalError, gold_answers, load_benchmark
from qwenlong_jax.rewards import family_of

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "bench")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_docmath():
    recs = load_benchmark("docmath", data_dir=FIX)
    assert [r.id for r in recs] == ["complong-testmini-0", "complong-testmini-1"]
    r = recs[0]
    assert r.data_source == "docmath" and family_of(r.data_source) == "docmath"
    # paragraphs then tables, blank-line separated
    assert r.document.startswith("Acme Corp. annual report.\n\nRevenue was $120 million")
    assert r.document.endswith("| 2022 | 150 |")
    assert r.prompt == build_prompt(r.document, r.question)
    assert gold_answers(r) == ["150"] and gold_answers(recs[1]) == ["0.25"]


def test_frames():
    recs = load_benchmark("frames", data_dir=FIX)
    assert [r.id for r in recs] == ["0", "1"]
    assert recs[0].data_source == "frames" and family_of("frames") == "docqa"
    assert recs[1].document == (
        "Titanic\nRMS Titanic sank in April 1912 after striking an iceberg."
        "\n\nIceberg\nAn iceberg is a piece of fresh water ice."
    )
    assert recs[1].question.startswith("In what year") and gold_answers(recs[1]) == ["1912"]


@pytest.mark.parametrize("name", ["2wikimqa", "hotpotqa", "musique", "narrativeqa", "qasper"])
def test_longbench(name):
    recs = load_benchmark(name, data_dir=FIX)
    rows = [json.loads(x) for x in Path(os.path.join(FIX, f"{name}.jsonl")).read_text().splitlines()]
    assert [r.id for r in recs] == [row["_id"] for row in rows]
    for r, row in zip(recs, rows):
        assert r.data_source == f"longbench_{name}" and family_of(r.data_source) == "docqa"
        assert (r.document, r.question) == (row["context"], row["input"])
        assert gold_answers(r) == row["answers"]
        assert r.prompt == build_prompt(row["context"], row["input"])


def test_ours_plain_jsonl():
    recs = load_benchmark("ours", data_dir=FIX)
    assert [(r.id, r.data_source, r.ground_truth) for r in recs] == [
        ("o1", "synthetic_long_toc_choices", "The correct answer is (B)"),
        ("o2", "synthetic_docmath", "863"),
        ("o3", "docqa", "MOLO"),  # data.readers' default source: doc-QA rule
    ]


def test_limit_and_json_list_file(tmp_path):
    rows = [json.loads(x) for x in Path(os.path.join(FIX, "docmath.jsonl")).read_text().splitlines()]
    path = tmp_path / "complong_testmini.json"  # DocMath-Eval ships one JSON list
    path.write_text(json.dumps(rows, indent=1))
    recs = load_benchmark("docmath", path=str(path), limit=1)
    assert [r.id for r in recs] == ["complong-testmini-0"]


@pytest.mark.parametrize(
    "name,file,message",
    [
        ("hotpotqa", "bad_json.jsonl", ":2: malformed JSON: Expecting"),
        ("musique", "bad_missing_answers.jsonl", ":1: field 'answers': missing"),
        ("frames", "bad_frames_wiki_items.jsonl", ":1: field 'wiki_items[0]': expected an object"),
        ("ours", "bad_ours.jsonl", ":1: field 'answer': missing"),
        ("qasper", "docmath.jsonl", ":1: field 'context': missing"),  # wrong file for the format
    ],
)
def test_malformed_file_names_benchmark_and_path(name, file, message):
    path = os.path.join(FIX, file)
    with pytest.raises(BenchmarkError) as e:
        load_benchmark(name, path=path)
    msg = str(e.value)
    assert msg.startswith(f"benchmark '{name}': {path}{message}"), msg
    assert "\n" not in msg


def test_missing_file_and_unknown_benchmark(tmp_path):
    with pytest.raises(BenchmarkError, match=rf"^benchmark 'frames': {tmp_path}/frames.jsonl: file not found$"):
        load_benchmark("frames", data_dir=str(tmp_path))
    with pytest.raises(EvalError, match="unknown benchmark 'mmlu'"):
        load_benchmark("mmlu", data_dir=FIX)


def test_cli_error_is_one_line(tmp_path):
    # In process: SystemExit with the message, raised before any model is loaded.
    with pytest.raises(SystemExit) as e:
        evaluate.main(
            [
                "--checkpoint",
                str(tmp_path / "nope"),
                "--data_dir",
                str(tmp_path),
                "--out",
                str(tmp_path / "out"),
                "--benchmarks",
                "hotpotqa",
            ]
        )
    assert e.value.code == f"error: benchmark 'hotpotqa': {tmp_path}/hotpotqa.jsonl: file not found"
    # As a program: exit status 1, one line on stderr, no traceback.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qwenlong_jax.evaluate",
            "--checkpoint",
            str(tmp_path),
            "--data_dir",
            FIX,
            "--bench_file",
            f"musique={FIX}/bad_missing_answers.jsonl",
            "--out",
            str(tmp_path / "out"),
            "--benchmarks",
            "hotpotqa,musique",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: benchmark 'musique': {FIX}/bad_missing_answers.jsonl:1: field 'answers': missing"
    ]
