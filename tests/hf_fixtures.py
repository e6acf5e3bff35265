"""Tiny random transformers models built and saved offline, for parity tests."""

from __future__ import annotations

import numpy as np


def make_hf_model(
    path: str,
    kind: str = "qwen2",
    *,
    tie: bool = False,
    yarn: bool = False,
    head_dim: int | None = None,
    seed: int = 0,
    vocab: int = 96,
):
    import torch
    import transformers

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
    )
    rope = (
        {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64}
        if yarn
        else {"rope_type": "default", "rope_theta": 10000.0}
    )
    if kind == "qwen2":
        cfg = transformers.Qwen2Config(**common, rope_parameters=rope)
        model = transformers.Qwen2ForCausalLM(cfg)
    else:
        cfg = transformers.Qwen3Config(**common, head_dim=head_dim or 16, rope_parameters=rope)
        model = transformers.Qwen3ForCausalLM(cfg)
    # Random init of every weight (norms and biases included) so nothing is trivially 1 or 0.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    model = model.float().eval()
    model.save_pretrained(path, safe_serialization=True)
    return model


def hf_logits(model, tokens: np.ndarray, lengths: list[int]) -> np.ndarray:
    import torch

    mask = (np.arange(tokens.shape[1])[None] < np.asarray(lengths)[:, None]).astype(np.int64)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask))
    return out.logits.float().numpy()


def padded_batch(lengths: list[int], vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    T = max(lengths)
    tokens = rng.integers(0, vocab, size=(len(lengths), T)).astype(np.int32)
    seg = (np.arange(T)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    tokens = tokens * seg  # pad id 0 on the right
    return tokens, seg
