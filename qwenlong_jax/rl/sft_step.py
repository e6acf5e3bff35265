"""Supervised warm-up step: cross-entropy on response tokens only, examples packed per row.

Rows hold several (prompt, response) examples, each its own segment; `loss_mask_BW` is 1 on
response tokens. The token at w is predicted from the hidden state at w-1 (same segment: the
mask is 0 on each example's first token, which is a prompt token).
Loss: token-mean over all response tokens of the step; with U micro-batches each one's sum is
divided by the step's total (times U, undoing apply_update's 1/U), so gradient accumulation
gives exactly the one-forward update (tested).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.rl import logprobs as logprobs_lib
from qwenlong_jax.run.train_state import TrainState, apply_update


def sft_loss(cfg: ModelConfig, params, mb: dict, normalizer=None):
    """Token-mean NLL over `mb`'s loss-mask tokens; `normalizer` replaces the token count (the
    step's count / U under micro-batching)."""
    B, W = mb["tokens_BW"].shape
    src_BW = jnp.broadcast_to(jnp.maximum(jnp.arange(W, dtype=jnp.int32) - 1, 0)[None], (B, W))
    logp_BW, _ = logprobs_lib.row_logprobs(
        cfg,
        params,
        mb["tokens_BW"],
        mb["positions_BW"],
        mb["segment_ids_BW"],
        src_BW,
        shared_prefix_segment=None,
        temperature=1.0,
    )
    m = mb["loss_mask_BW"].astype(jnp.float32)
    n = jnp.maximum(jnp.sum(m), 1.0) if normalizer is None else normalizer
    nll = -jnp.sum(logp_BW * m) / n
    acc = jnp.sum((logp_BW > jnp.log(0.5)) * m) / n  # token prob > 0.5: certainly the argmax
    return nll, {"nll": nll, "token_acc": acc, "num_tokens": jnp.sum(m)}


def sft_update(
    cfg: ModelConfig, tx: optax.GradientTransformation, state: TrainState, batch: dict
) -> tuple[TrainState, dict]:
    """One optimizer update; batch arrays are [U, Bm, W] (U micro-batches)."""
    U = batch["tokens_BW"].shape[0]
    if U == 1:
        return apply_update(state, tx, lambda p, mb: sft_loss(cfg, p, mb), batch)
    per_micro = jnp.maximum(jnp.sum(batch["loss_mask_BW"].astype(jnp.float32)), 1.0) / U
    state, metrics = apply_update(state, tx, lambda p, mb: sft_loss(cfg, p, mb, per_micro), batch)
    return state, {**metrics, "num_tokens": metrics["num_tokens"] * U}


def pack_sft_rows(examples: list[tuple[list[int], list[int]]], row_len: int) -> dict:
    """Greedy first-fit packing of (prompt, response) token lists into rows of `row_len`; the
    loss is on the responses."""
    return pack_masked_rows([(list(p) + list(r), [0] * len(p) + [1] * len(r)) for p, r in examples], row_len)


def pack_masked_rows(examples: list[tuple[list[int], list[int]]], row_len: int) -> dict:
    """Greedy first-fit packing of (token ids, per-token loss mask) pairs into rows of `row_len`
    (segment ids keep packed examples apart; positions restart at 0 in each)."""
    rows: list[list[int]] = []
    used: list[int] = []
    for i, (ids, mask) in enumerate(examples):
        n = len(ids)
        if len(mask) != n:
            raise ValueError(f"example {i}: {n} tokens but a loss mask of {len(mask)}")
        if n > row_len:
            raise ValueError(f"SFT example {i} has {n} tokens, more than the row length {row_len}")
        for k, u in enumerate(used):
            if u + n <= row_len:
                rows[k].append(i)
                used[k] += n
                break
        else:
            rows.append([i])
            used.append(n)
    B = len(rows)
    out = {k: np.zeros((B, row_len), np.int32) for k in ("tokens_BW", "positions_BW", "segment_ids_BW")}
    out["loss_mask_BW"] = np.zeros((B, row_len), np.float32)
    for b, row in enumerate(rows):
        w = 0
        for s, i in enumerate(row):
            ids, mask = examples[i]
            n = len(ids)
            out["tokens_BW"][b, w : w + n] = ids
            out["positions_BW"][b, w : w + n] = np.arange(n)
            out["segment_ids_BW"][b, w : w + n] = s + 1
            out["loss_mask_BW"][b, w : w + n] = mask
            w += n
    return out
