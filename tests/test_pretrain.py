"""The base-checkpoint command at a tiny budget, and its masked-loss data."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from qwenlong_jax import models
from qwenlong_jax.cli import pretrain
from qwenlong_jax.data.pretrain import pretrain_example
from qwenlong_jax.data.tokenizer import load_tokenizer
from qwenlong_jax.rl.sft_step import pack_masked_rows, pack_sft_rows

TINY = [
    "--steps",
    "3",
    "--rows",
    "2",
    "--seq_len",
    "160",
    "--max_doc_tokens",
    "96",
    "--hidden_size",
    "32",
    "--num_layers",
    "1",
    "--save_every",
    "2",
    "--probe_lengths",
    "64",
    "--attributes",
    "1",
]


def test_tiny_budget_writes_a_loadable_checkpoint(tmp_path):
    out = str(tmp_path / "base")
    info = pretrain.main(["--out", out, *TINY])
    cfg, params = models.load_hf_checkpoint(out)
    assert (cfg.hidden_size, cfg.num_layers) == (32, 1)
    assert all(np.isfinite(np.asarray(x)).all() for x in __import__("jax").tree.leaves(params))
    assert load_tokenizer(os.path.join(out, "tokenizer", "spm.model")).vocab_size == cfg.vocab_size
    meta = json.loads(Path(os.path.join(out, "pretrain.json")).read_text())
    assert meta == json.loads(json.dumps(info))
    assert meta["steps"] == 3 and meta["command"].startswith("python -m qwenlong_jax.pretrain --out")
    assert 0.0 <= meta["lookup"]["lookup_acc_64"] <= 1.0
    rows = [json.loads(ln) for ln in Path(os.path.join(out, "metrics.jsonl")).read_text().splitlines()]
    assert [r["step"] for r in rows if "lookup_acc_64" in r] == [2, 3]
    # A second stage continues from the first and records it.
    out2 = str(tmp_path / "stage2")
    pretrain.main(["--out", out2, "--init_from", out, "--steps", "1", *TINY[2:]])
    meta2 = json.loads(Path(os.path.join(out2, "pretrain.json")).read_text())
    assert meta2["previous"]["steps"] == 3 and meta2["init_from"] == out


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_answers_only_loss_covers_qa_lines_and_responses(tok):
    ids_all, mask_all = pretrain_example(0, 3, 0.8, tok, max_tokens=300, chat_fraction=0.0, attributes=1)
    ids, mask = pretrain_example(0, 3, 0.8, tok, max_tokens=300, chat_fraction=0.0, attributes=1, loss_on="answers")
    assert ids == ids_all and all(mask_all) and len(mask) == len(ids)
    targets = tok.decode([t for t, m in zip(ids, mask) if m])
    lines = [ln for ln in targets.split("\n") if ln]
    assert lines and all(ln.startswith("What is") for ln in lines)  # QA lines only, whole
    context = tok.decode([t for t, m in zip(ids, mask) if not m])
    assert "What" not in context and "the code of" in context
    chat_ids, chat_mask = pretrain_example(
        0, 3, 0.8, tok, max_tokens=300, chat_fraction=1.0, attributes=1, loss_on="answers"
    )
    k = chat_mask.index(1)
    assert tok.decode(chat_ids[k:]).startswith("<think>") and all(chat_mask[k:]) and not any(chat_mask[:k])
    with pytest.raises(ValueError, match="loss_on"):
        pretrain_example(0, 3, 0.8, tok, loss_on="document")


def test_pack_masked_rows_keeps_masks_and_segments():
    a, b, c = ([1, 2, 3], [0, 1, 1]), ([4, 5], [1, 0]), ([6, 7, 8, 9], [0, 0, 1, 1])
    rows = pack_masked_rows([a, b, c], 6)
    assert rows["tokens_BW"].tolist() == [[1, 2, 3, 4, 5, 0], [6, 7, 8, 9, 0, 0]]
    assert rows["loss_mask_BW"].tolist() == [[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0]]
    assert rows["segment_ids_BW"].tolist() == [[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]]
    assert rows["positions_BW"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]]
    sft = pack_sft_rows([([1, 2], [3]), ([4], [5, 6])], 6)
    assert sft["loss_mask_BW"].tolist() == [[0, 0, 1, 0, 1, 1]]
    with pytest.raises(ValueError, match="loss mask"):
        pack_masked_rows([([1, 2], [1])], 6)


def test_copy_drill_repeats_its_sequence(tok):
    import random

    from qwenlong_jax.data.pretrain import copy_drill

    ids, mask = copy_drill(random.Random(0), tok, 12)
    n = (len(ids) - 2) // 2
    assert ids[:n] == ids[n + 1 : 2 * n + 1] and ids[-1] == tok.eos_ids[0]
    assert mask == [0] * (n + 1) + [1] * (n + 1) and len(ids) == 2 * n + 2
    assert len(tok.decode(ids[:n]).split()) == 12
    mixed = [pretrain_example(0, i, 0.5, tok, copy_fraction=0.5, loss_on="answers")[0] for i in range(40)]
    assert (
        8
        <= sum(len(set(x[: len(x) // 2])) and x[: (len(x) - 2) // 2] == x[(len(x) - 2) // 2 + 1 : -1] for x in mixed)
        <= 32
    )
