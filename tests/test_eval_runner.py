"""Evaluation runs on the fixture file of every benchmark format, with a stand-in generate
function that returns canned responses, so every metric is hand-computed (arithmetic in the
comments); resume; middle truncation; settings mismatch."""

import json
import os
import types

import pytest

from qwenlong_jax.cli import evaluate
from qwenlong_jax.data import Record, build_prompt
from qwenlong_jax.data.tokenizer import load_tokenizer
from qwenlong_jax.eval import benchmarks, evaluation, generation, runner
from qwenlong_jax.eval.metrics import pass_at_k

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "bench")
TOK = load_tokenizer(None)

# question (a substring of the prompt) -> canned response per sample index.
CANNED = {
    # docmath: "$150 million" parses to 150 == 150 -> 1. EM: "150 million" vs "150" -> 0.
    # F1: pred {150, million}, gold {150}: P=1/2, R=1 -> 2/3.
    "What was the total revenue in 2022": "<think> 150 </think> Therefore, the answer is $150 million.",
    # 30 vs 0.25: not within 0.15%, 30/0.25 = 120 is no power of ten -> 0. EM 0, F1 0.
    "What share of revenue came from services": "<think> x </think> Therefore, the answer is 30%.",
    # frames: "**Jane Austen**." -> "Jane Austen" -> sub_em 1, EM 1, F1 1.
    "Who wrote the novel published in 1813": "<think> x </think> Therefore, the answer is **Jane Austen**.",
    # no </think> -> rule 0, prediction "" -> EM 0, F1 0.
    "In what year did the ship": "Therefore, the answer is 1912.",
    # 2wikimqa: "USA": sub_em vs "united states" 0, vs "usa" 1 -> max 1. EM max 1, F1 max 1.
    "Which country is the director of film Heat": "<think> x </think> Therefore, the answer is USA",
    # "godfather part ii" contains "godfather" -> 1. EM 0. F1 {godfather, part, ii} vs
    # {godfather}: P=1/3, R=1 -> 2*(1/3)/(4/3) = 1/2.
    "Which film is the 1974 sequel": "<think> x </think> the answer is The Godfather Part II.",
    # hotpotqa: "paris france" contains "paris" -> 1. EM 0. F1: P=1/2, R=1 -> 2/3.
    "Where is the museum": "<think> x </think> Therefore, the answer is Paris, France.",
    # "no" vs "yes" -> 0, EM 0, F1 0 (the judge test below flips it).
    "Are both Kesha": "<think> x </think> Therefore, the answer is no.",
    # musique: exact -> 1, 1, 1.
    "When was the country where Ottawa": "<think> x </think> Therefore, the answer is 1867.",
    # no answer phrase -> 0, 0, 0.
    "Who founded the company that makes": "<think> x </think> I do not know.",
    # narrativeqa: "fisherman" in "he was fisherman" -> 1; EM vs "a fisherman" -> 1; F1 1.
    "What was Santiago's job": "<think> x </think> Therefore, the answer is fisherman.",
    # qasper: "roberta" contains "bert" -> sub_em 1 (the rule's known leniency); EM 0; F1 0.
    "Which pretrained encoder": "<think> x </think> Therefore, the answer is RoBERTa.",
    "What is the size of the hidden test set": "<think> x </think> Therefore, the answer is unanswerable",
    # ours: choice (B) == (B) -> 1; EM "B" vs "B" 1; F1 1.
    "Which is the code of KIRA": "<think> x </think> The correct answer is (B).",
    # synthetic_docmath: 863.0 == 863 -> 1. EM: "8630" vs "863" -> 0; F1 0.
    "What is the age of KIRA plus": "<think> x </think> Therefore, the answer is 863.0",
    # doc-QA fallback: "kira" vs "molo" -> 0, 0, 0.
    "Who is the boss of KIRA": "<think> x </think> Therefore, the answer is KIRA.",
}

# benchmark -> (score, em, f1), means over ids of the values above.
EXPECTED = {
    "docmath": (0.5, 0.0, 1 / 3),  # score (1+0)/2, em (0+0)/2, f1 (2/3+0)/2
    "frames": (0.5, 0.5, 0.5),  # (1+0)/2 each
    "2wikimqa": (1.0, 0.5, 0.75),  # score (1+1)/2, em (1+0)/2, f1 (1+1/2)/2
    "hotpotqa": (0.5, 0.0, 1 / 3),  # score (1+0)/2, em 0, f1 (2/3+0)/2
    "musique": (0.5, 0.5, 0.5),
    "narrativeqa": (1.0, 1.0, 1.0),
    "qasper": (1.0, 0.5, 0.5),  # score (1+1)/2, em (0+1)/2, f1 (0+1)/2
    "ours": (2 / 3, 1 / 3, 1 / 3),  # score (1+1+0)/3, em (1+0+0)/3, f1 (1+0+0)/3
}


class FakeGenerate:
    """The sampler contract with canned responses; records every prompt it was given."""

    def __init__(self, canned=CANNED, per_sample=None):
        self.canned, self.per_sample, self.calls = canned, per_sample or {}, []

    def __call__(
        self, cfg, params, prompts, *, max_new_tokens, temperature, top_p, top_k, num_samples, eos_ids, seed, mesh=None
    ):
        self.calls.append(
            dict(
                n=len(prompts),
                temperature=temperature,
                top_p=top_p,
                num_samples=num_samples,
                lens=[len(p) for p in prompts],
                mesh=mesh,
            )
        )
        out = []
        for p in prompts:
            text = TOK.decode(p)
            key = next(k for k in self.canned if k in text)
            texts = self.per_sample.get(key) or [self.canned[key]] * num_samples
            out.append(
                [
                    types.SimpleNamespace(tokens=TOK.encode(t) + [eos_ids[0]], logprobs=[], finish_reason="eos")
                    for t in texts[:num_samples]
                ]
            )
        return out


def fake_model(tokenizer=TOK):
    return generation.Model(cfg=None, params={}, tokenizer=tokenizer)


@pytest.fixture
def no_checkpoint(monkeypatch):
    monkeypatch.setattr(generation, "load_model", lambda *a, **k: fake_model())


def _cli(out, benches, fake, *extra):
    return evaluate.main(
        [
            "--checkpoint",
            "unused",
            "--data_dir",
            FIX,
            "--out",
            str(out),
            "--benchmarks",
            ",".join(benches),
            "--no_progress",
            "--batch_size",
            "2",
            *extra,
        ],
        generate_fn=fake,
    )


def test_fixture_runs_every_format(tmp_path, no_checkpoint):
    fake = FakeGenerate()
    summary = _cli(tmp_path, list(EXPECTED), fake, "--extra_rows", "")
    for b, (score, em, f1) in EXPECTED.items():
        m = summary[b]
        assert (m["score"], m["em"]) == pytest.approx((score, em)), b
        assert m["f1"] == pytest.approx(f1), b
        assert m["rule"] == pytest.approx(score)  # no judge: score == rule
        assert m["pass@1"] == pytest.approx(score)  # one sample, scores in {0, 1}
    # docs/recipe.md's sampling by default; prompts of a batch are length-sorted, longest first.
    assert {(c["temperature"], c["top_p"], c["num_samples"]) for c in fake.calls} == {(0.7, 0.95, 1)}
    rows = [json.loads(x) for x in (tmp_path / "predictions" / "2wikimqa.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["2wikimqa-0", "2wikimqa-1"]
    assert rows[0]["gold"] == ["United States", "USA"] and rows[0]["prediction"] == "USA"
    assert rows[0]["response"].endswith("the answer is USA")  # eos token stripped
    assert rows[0]["judge"] is None and not rows[0]["truncated"]
    assert rows[0]["input_tokens"] == len(
        TOK.chat_prompt(benchmarks.load_benchmark("2wikimqa", data_dir=FIX)[0].prompt)
    )
    s = json.loads((tmp_path / "summary.json").read_text())
    # avg over the paper's seven: (0.5+0.5+1+0.5+0.5+1+1)/7 = 5/7; "ours" is not averaged in.
    assert s["avg"] == pytest.approx(100 * 5 / 7)
    assert (tmp_path / "table.md").read_text().startswith("| Model | DocMath | Frames |")
    assert (tmp_path / "scores.png").stat().st_size > 1000


def test_judge_max_with_rule(tmp_path, no_checkpoint, monkeypatch):
    asked = []

    class Judge:
        def score_batch(self, queries):
            asked.extend(queries)
            return [1.0 if (q.prediction, q.gold) == ("no", "yes") else 0.0 for q in queries]

        def stats(self):
            return {"queries": len(asked)}

    monkeypatch.setattr(evaluation, "make_judge", lambda req: Judge())
    summary = _cli(tmp_path, ["hotpotqa", "frames"], FakeGenerate())
    # Asked only about rule misses with a parsed answer: hotpotqa "no" (rule 0). Not about the
    # two rule hits, nor frames' response without </think> (nothing parsed).
    assert [(q.prediction, q.gold, q.question) for q in asked] == [
        ("no", "yes", "Are both Kesha and Ke$ha the same singer?")
    ]
    assert summary["hotpotqa"]["score"] == 1.0  # max(0, 1) and 1: (1+1)/2
    assert summary["hotpotqa"]["rule"] == 0.5 and summary["hotpotqa"]["em"] == 0.0
    rows = [json.loads(x) for x in (tmp_path / "predictions" / "hotpotqa.jsonl").read_text().splitlines()]
    assert [(r["rule"], r["judge"], r["score"]) for r in rows] == [(1.0, None, 1.0), (0.0, 1.0, 1.0)]


def test_samples_and_pass_at_k(tmp_path, no_checkpoint):
    right = "<think> x </think> Therefore, the answer is 1867."
    wrong = "<think> x </think> Therefore, the answer is 1900."
    ibuka = "<think> x </think> Therefore, the answer is Masaru Ibuka."
    fake = FakeGenerate(
        per_sample={
            "When was the country where Ottawa": [right, wrong, right, wrong],
            "Who founded the company that makes": [wrong] * 3 + [ibuka],
        }
    )
    summary = _cli(tmp_path, ["musique"], fake, "--num_samples", "4", "--pass_k", "1,2,4")
    m = summary["musique"]
    assert m["n_ids"] == 2 and m["n_samples"] == 8
    # mean@4: (2/4 + 1/4) / 2 = 3/8
    assert m["score"] == pytest.approx(3 / 8)
    # pass@2: id 1 (c=2): 1 - C(2,2)/C(4,2) = 5/6; id 2 (c=1): 1 - C(3,2)/C(4,2) = 1/2.
    assert m["pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert m["pass@4"] == 1.0 and m["pass@1"] == pytest.approx(3 / 8)
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)


def test_resume_skips_done_ids(tmp_path, no_checkpoint):
    fake = FakeGenerate()
    _cli(tmp_path, ["qasper"], fake, "--limit", "1")
    assert sum(c["n"] for c in fake.calls) == 1
    # A crash mid-write leaves a torn line: it is dropped and the file stays line-aligned.
    pred = tmp_path / "predictions" / "qasper.jsonl"
    with open(pred, "a") as f:
        f.write('{"id": "qasper-1", "sam')
    fake2 = FakeGenerate()
    summary = _cli(tmp_path, ["qasper"], fake2)
    assert sum(c["n"] for c in fake2.calls) == 1  # only qasper-1 was generated
    assert "What is the size of the hidden test set" in TOK.decode(
        runner.encode_record(benchmarks.load_benchmark("qasper", data_dir=FIX)[1], TOK, 10**6)[0]
    )
    rows = [json.loads(x) for x in pred.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["qasper-0", "qasper-1"]
    assert summary["qasper"]["score"] == 1.0
    fake3 = FakeGenerate()
    _cli(tmp_path, ["qasper"], fake3)
    assert fake3.calls == []  # everything done: nothing regenerated


def test_resume_refuses_other_settings(tmp_path, no_checkpoint):
    _cli(tmp_path, ["narrativeqa"], FakeGenerate())
    with pytest.raises(SystemExit) as e:
        _cli(tmp_path, ["narrativeqa"], FakeGenerate(), "--greedy")
    assert "different settings" in str(e.value.code) and "temperature: 0.7 -> 0.0" in str(e.value.code)


def test_middle_truncation_keeps_budget_and_question(tmp_path):
    doc = " ".join(f"fact number {i} is {i * 7} ." for i in range(400))
    rec = Record(
        id="long",
        data_source="longbench_hotpotqa",
        prompt=build_prompt(doc, "Where is the museum?"),
        ground_truth="Paris",
        answer="Paris",
        document=doc,
        question="Where is the museum?",
    )
    full = len(TOK.chat_prompt(rec.prompt))
    budget = 300
    assert full > 4 * budget
    ids, n_full = runner.encode_record(rec, TOK, budget)
    assert n_full == full and len(ids) <= budget and len(ids) >= budget - 8
    text = TOK.decode(ids)
    # The head and the tail of the document survive, the middle is gone; the question and
    # the format line are never cut.
    assert "fact number 0 is 0 ." in text and "fact number 399 is 2793 ." in text
    assert "fact number 200 is" not in text
    assert text.endswith(
        'Format your response as follows: "Therefore, the answer is (insert '
        'answer here)".<|im_end|>\n<|im_start|>assistant\n'
    )
    assert "Where is the museum?" in text
    fake = FakeGenerate()
    rows = runner.run_records(
        fake_model(),
        [rec],
        generation.SamplingSettings.greedy(16),
        max_input_tokens=budget,
        batch_size=4,
        generate_fn=fake,
        progress=False,
    )
    assert fake.calls[0]["lens"] == [len(ids)] and fake.calls[0]["temperature"] == 0.0
    assert rows[0]["truncated"] and rows[0]["input_tokens"] == len(ids)
    assert rows[0]["full_input_tokens"] == full and rows[0]["score"] == 1.0


def test_length_batches():
    # longest first, ties by index; batches of 2
    assert runner.length_batches([5, 50, 7, 50, 1], 2) == [[1, 3], [2, 0], [4]]


def test_mesh_is_passed_through(tmp_path, monkeypatch):
    meshes = []
    monkeypatch.setattr(generation, "load_model", lambda *a, **k: meshes.append(a[3]) or fake_model())
    fake = FakeGenerate()
    _cli(tmp_path, ["narrativeqa"], fake, "--mesh=-1,1,1,1")  # "=": argparse reads "-1" as a flag
    mesh = fake.calls[0]["mesh"]
    # conftest's 8 fake CPU devices, all on the data axis; the same mesh loads the params.
    assert dict(mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1, "sequence": 1}
    assert meshes == [mesh]
    with pytest.raises(SystemExit) as e:
        _cli(tmp_path / "b", ["narrativeqa"], fake, "--mesh=3,1,1,1")
    assert "does not match the 8 available devices" in str(e.value.code)


def test_http_judge_from_cli_flags(tmp_path, no_checkpoint, monkeypatch):
    """--judge_url/--judge_model/--judge_api_key_env reach rewards.OpenAIJudge: a stub
    OpenAI-compatible server that always answers [[YES]] turns the one rule miss into a 1."""
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("Authorization"), body["model"]))
            reply = json.dumps({"choices": [{"message": {"content": "[[YES]]"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("EVAL_TEST_JUDGE_KEY", "sekret")
    try:
        summary = _cli(
            tmp_path,
            ["hotpotqa"],
            FakeGenerate(),
            "--judge_url",
            f"http://127.0.0.1:{server.server_address[1]}/v1",
            "--judge_model",
            "judge-1.5b",
            "--judge_api_key_env",
            "EVAL_TEST_JUDGE_KEY",
        )
    finally:
        server.shutdown()
    # Only the rule miss ("no" vs "yes") is sent; [[YES]] -> 1, so (1 + 1) / 2.
    assert seen == [("/v1/chat/completions", "Bearer sekret", "judge-1.5b")]
    assert summary["hotpotqa"]["score"] == 1.0 and summary["hotpotqa"]["rule"] == 0.5
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["judge_stats"]["queries"] == 1 and s["settings"]["judge_model"] == "judge-1.5b"
    assert "sekret" not in (tmp_path / "summary.json").read_text()
    with pytest.raises(SystemExit) as e:
        _cli(tmp_path / "b", ["hotpotqa"], FakeGenerate(), "--judge_url", "http://x/v1")
    assert "--judge_url and --judge_model go together" in str(e.value.code)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(benchmarks.EvalError, match="no config.json"):
        generation.load_model(str(tmp_path))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    with pytest.raises(benchmarks.EvalError, match=r"a training workdir\? its export is .*/hf$"):
        generation.load_model(str(tmp_path))
    with pytest.raises(benchmarks.EvalError, match="no tokenizer/ or tokenizer.json"):
        generation.load_model(str(tmp_path / "hf"))
