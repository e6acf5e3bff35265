"""Parity with transformers: logits of tiny random Qwen2/Qwen3 checkpoints, and round trips."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from qwenlong_jax import models
from tests.hf_fixtures import hf_logits, make_hf_model, padded_batch

CASES = [
    dict(kind="qwen2", tie=False, yarn=False),
    dict(kind="qwen2", tie=True, yarn=False),
    dict(kind="qwen2", tie=False, yarn=True),
    dict(kind="qwen3", tie=False, yarn=False, head_dim=32),  # head_dim != hidden/heads (16)
    dict(kind="qwen3", tie=True, yarn=True, head_dim=24),
]
LENGTHS = [37, 20, 5]


def _check_valid_logits(ours, ref, lengths, atol=1e-4):
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(np.asarray(ours)[b, :n], ref[b, :n], atol=atol, rtol=0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_forward_matches_transformers(tmp_path, case):
    hf_model = make_hf_model(str(tmp_path), **case)
    cfg, params = models.load_hf_checkpoint(str(tmp_path), dtype=jnp.float32)
    assert cfg.model_type == case["kind"]
    assert cfg.tie_word_embeddings == case["tie"]
    assert (cfg.rope_scaling is not None) == case["yarn"]
    tokens, seg = padded_batch(LENGTHS, cfg.vocab_size)
    ours = models.forward(cfg, params, jnp.asarray(tokens), segment_ids_BT=jnp.asarray(seg))
    assert ours.dtype == jnp.float32
    _check_valid_logits(ours, hf_logits(hf_model, tokens, LENGTHS), LENGTHS)


@pytest.mark.parametrize("max_shard_bytes", [None, 20_000], ids=["single", "sharded"])
@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])
def test_save_round_trip_through_transformers(tmp_path, kind, max_shard_bytes):
    import transformers

    src, dst = tmp_path / "src", tmp_path / "dst"
    make_hf_model(str(src), kind, yarn=(kind == "qwen2"), head_dim=32)
    cfg, params = models.load_hf_checkpoint(str(src))
    kwargs = {} if max_shard_bytes is None else {"max_shard_bytes": max_shard_bytes}
    models.save_hf_checkpoint(str(dst), cfg, params, **kwargs)
    if max_shard_bytes:
        index = json.loads((dst / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) > 1
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(dst), dtype="float32").eval()
    tokens, seg = padded_batch(LENGTHS, cfg.vocab_size, seed=1)
    ours = models.forward(cfg, params, jnp.asarray(tokens), segment_ids_BT=jnp.asarray(seg))
    _check_valid_logits(ours, hf_logits(reloaded, tokens, LENGTHS), LENGTHS)
    # And our own loader reads back what we wrote, bit for bit.
    cfg2, params2 = models.load_hf_checkpoint(str(dst))
    assert cfg2 == cfg
    for a, b in zip(jax_leaves(params), jax_leaves(params2)):
        np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_transformers_5_and_4_config_spellings_agree(tmp_path):
    make_hf_model(str(tmp_path), "qwen2", yarn=True)
    hf = json.loads((tmp_path / "config.json").read_text())
    new = models.model_config_from_hf(hf)
    legacy = dict(hf)
    rp = legacy.pop("rope_parameters")
    legacy["rope_theta"] = rp["rope_theta"]
    legacy["rope_scaling"] = {
        "type": "yarn",
        "factor": rp["factor"],
        "original_max_position_embeddings": rp["original_max_position_embeddings"],
    }
    legacy["torch_dtype"] = legacy.pop("dtype", "float32")
    old = models.model_config_from_hf(legacy)
    assert old == new
    assert new.rope_scaling.factor == 4.0 and new.rope_scaling.original_max_position_embeddings == 64


def test_missing_tensor_is_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    make_hf_model(str(tmp_path), "qwen2")
    f = os.path.join(tmp_path, "model.safetensors")
    tensors = load_file(f)
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, f)
    with pytest.raises(models.CheckpointError, match=r"missing tensor model\.layers\.1\.self_attn\.k_proj\.weight"):
        models.load_hf_checkpoint(str(tmp_path))


def test_unsupported_model_type(tmp_path):
    make_hf_model(str(tmp_path), "qwen2")
    hf = json.loads((tmp_path / "config.json").read_text())
    hf["model_type"] = "llama"
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(models.CheckpointError, match=r"model_type 'llama' is not supported"):
        models.load_hf_checkpoint(str(tmp_path))
