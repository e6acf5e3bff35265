"""Synthetic sweep with an oracle stand-in that solves only lookup questions (by reading the
fact in the prompt), so every accuracy is known: lookup 1, the other families 0."""

import re
import types

import pytest

from qwenlong_jax.data.synthetic import FAMILIES
from qwenlong_jax.data.tokenizer import load_tokenizer
from qwenlong_jax.eval import generation, sweep

TOK = load_tokenizer(None)
_LOOKUP = re.compile(r"What is the (\w+) of (\w+) \?\n")


def lookup_oracle(
    cfg, params, prompts, *, max_new_tokens, temperature, top_p, top_k, num_samples, eos_ids, seed, mesh=None
):
    out = []
    for p in prompts:
        text = TOK.decode(p)
        m = _LOOKUP.search(text)
        if m:  # "the {attr} of {name} is {value} ." is in the document
            value = re.search(rf"the {m.group(1)} of {m.group(2)} is (\d+) \.", text).group(1)
            resp = f"<think> found </think> Therefore, the answer is {value}."
        else:
            resp = "<think> ? </think> Therefore, the answer is unknown."  # "0" would sub_em "470"
        out.append(
            [types.SimpleNamespace(tokens=TOK.encode(resp) + [eos_ids[0]], logprobs=[], finish_reason="eos")]
            * num_samples
        )
    return out


def test_sweep_records_lengths_and_families():
    recs = sweep.sweep_records(TOK, [96, 192], per_length=8, seed=3)
    assert sorted(recs) == [96, 192]
    for L, rs in recs.items():
        assert [sweep.task_family(r) for r in rs] == list(FAMILIES) * 2
        assert all(TOK.count(r.document) <= L for r in rs)
        assert len({r.id for r in rs}) == 8 and all(r.id.startswith(f"L{L}-") for r in rs)
    # the longer setting gives longer documents; same seed -> same records
    assert sum(TOK.count(r.document) for r in recs[192]) > sum(TOK.count(r.document) for r in recs[96])
    assert sweep.sweep_records(TOK, [96], 8, seed=3)[96] == recs[96]


def test_accuracy_by_length_hand_computed():
    recs = sweep.sweep_records(TOK, [96, 192], per_length=8, seed=3)
    res = sweep.accuracy_by_length(None, {}, TOK, recs, max_new_tokens=16, generate_fn=lookup_oracle, batch_size=3)
    # 8 examples per length cycle the 4 families: 2 lookups right, 6 others wrong -> 2/8.
    assert res["by_length"] == {96: 0.25, 192: 0.25} and res["overall"] == 0.25
    assert res["by_length_family"][96] == {"choice": 0.0, "docmath": 0.0, "lookup": 1.0, "multihop": 0.0}
    assert res["by_family"]["lookup"] == 1.0 and res["count"] == {96: 8, 192: 8}
    flat = sweep.flat_metrics(res)
    assert flat["eval/acc_len96"] == 0.25 and flat["eval/acc_len192_lookup"] == 1.0
    assert flat["eval/acc_multihop"] == 0.0
    table = sweep.sweep_table(res)
    assert table.splitlines()[0] == "| Doc tokens | lookup | multihop | docmath | choice | all | n |"
    assert table.splitlines()[2] == "| 96 | 100.0 | 0.0 | 0.0 | 0.0 | 25.0 | 8 |"
    assert table.splitlines()[-1] == "| all | 100.0 | 0.0 | 0.0 | 0.0 | 25.0 | 16 |"


def test_run_sweep_writes_table_and_png(tmp_path):
    model = generation.Model(None, {}, TOK)
    res = sweep.run_sweep(
        model,
        [96, 192],
        4,
        str(tmp_path),
        sampling=generation.SamplingSettings.greedy(16),
        generate_fn=lookup_oracle,
        progress=False,
        model_name="oracle",
    )
    assert res["overall"] == pytest.approx(0.25)
    png = (tmp_path / "sweep.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 5000
    assert "| 192 | 100.0 | 0.0 | 0.0 | 0.0 | 25.0 | 4 |" in (tmp_path / "sweep.md").read_text()
    assert (tmp_path / "sweep" / "len96.jsonl").read_text().count("\n") == 4
