"""End to end through the real sampler: a tiny random model saved as our trainer saves a
checkpoint (HF files + tokenizer/), the CLI on two benchmark fixtures and the sweep."""

import json
import os
import shutil

import jax
import pytest

from qwenlong_jax import models, sampling
from qwenlong_jax.cli import evaluate
from qwenlong_jax.data.tokenizer import DEFAULT_TOKENIZER, load_tokenizer
from qwenlong_jax.eval import benchmarks, generation, runner, sweep

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "bench")
NEW = 6
# Every sampler call below has 2 prompts of at most 256 tokens and NEW new tokens, greedy, so
# the file compiles the sampler for few length buckets.
BATCH = "2"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    tok = load_tokenizer(None)
    cfg = models.get_model_config(
        "tiny",
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        num_kv_heads=1,
        head_dim=16,
        intermediate_size=64,
    )
    # jit: one compile instead of one per random op (seconds on a loaded 2-core machine)
    params = jax.jit(models.init_params, static_argnums=(0, 2))(cfg, jax.random.key(0), 0.5)
    models.save_hf_checkpoint(str(path), cfg, params)
    os.makedirs(path / "tokenizer")
    shutil.copy(DEFAULT_TOKENIZER, path / "tokenizer" / "spm.model")
    return str(path)


def test_cli_with_real_sampler(checkpoint, tmp_path):
    args = [
        "--checkpoint",
        checkpoint,
        "--data_dir",
        FIX,
        "--benchmarks",
        "frames,docmath",
        "--greedy",
        "--max_new_tokens",
        str(NEW),
        "--max_input_tokens",
        "190",
        "--batch_size",
        BATCH,
        "--no_progress",
        "--model_name",
        "tiny-random",
    ]
    summary = evaluate.main(args + ["--out", str(tmp_path / "a")])
    assert summary["frames"]["n_ids"] == 2 and summary["docmath"]["n_ids"] == 2
    # The file is in generation order (longest prompt first); sort to record order.
    rows = sorted(
        (
            json.loads(x)
            for b in ("frames", "docmath")
            for x in (tmp_path / "a" / "predictions" / f"{b}.jsonl").read_text().splitlines()
        ),
        key=lambda r: (r["benchmark"] != "frames", r["id"]),
    )
    assert all(1 <= r["output_tokens"] <= NEW and r["input_tokens"] <= 190 for r in rows)
    assert [r["truncated"] for r in rows] == [False, False, True, False]  # docmath-0: 198 tokens
    # A random model writes no "</think> ... the answer is": every score is 0.
    assert all(r["score"] == 0.0 and r["judge"] is None for r in rows)
    # The responses are the sampler's greedy tokens, decoded without the eos token.
    model = generation.load_model(checkpoint)
    recs = benchmarks.load_benchmark("frames", data_dir=FIX)
    prompts = [runner.encode_record(r, model.tokenizer, 190)[0] for r in recs]
    direct = sampling.generate(model.cfg, model.params, prompts, max_new_tokens=NEW, eos_ids=model.tokenizer.eos_ids)
    for r, s in zip(rows[:2], direct):
        toks = s[0].tokens[:-1] if s[0].finish_reason == "eos" else s[0].tokens
        assert r["response"] == model.tokenizer.decode(toks)
        assert r["output_tokens"] == len(s[0].tokens) and r["finish_reason"] == s[0].finish_reason
    assert os.path.getsize(tmp_path / "a" / "scores.png") > 1000
    assert "| tiny-random | 0.0 | 0.0 | 0.0 |" in (tmp_path / "a" / "table.md").read_text()


def test_sweep_with_real_sampler(checkpoint, tmp_path):
    model = generation.load_model(checkpoint)
    recs = sweep.sweep_records(model.tokenizer, [96, 128], per_length=4)
    kw = dict(max_new_tokens=NEW, batch_size=int(BATCH))
    res = sweep.accuracy_by_length(model.cfg, model.params, model.tokenizer, recs, **kw)
    assert sorted(res["by_length"]) == [96, 128] and res["count"] == {96: 4, 128: 4}
    assert set(res["by_length_family"][96]) == {"lookup", "multihop", "docmath", "choice"}
    assert res == sweep.accuracy_by_length(model.cfg, model.params, model.tokenizer, recs, **kw)
    out = evaluate.main(
        [
            "--checkpoint",
            checkpoint,
            "--out",
            str(tmp_path),
            "--sweep",
            "--lengths",
            "96,128",
            "--per_length",
            "4",
            "--greedy",
            "--max_new_tokens",
            str(NEW),
            "--batch_size",
            BATCH,
            "--no_progress",
        ]
    )
    assert out == res  # the CLI sweep is the library function on the same records
    assert os.path.getsize(tmp_path / "sweep.png") > 1000
