"""The GRPO/DAPO update and the policy-logprob pass, as pure functions over device arrays.

Batch layout (host arrays from rl.packing, reshaped by `grpo_batch`):
    rows:   tokens/positions/segment_ids/src  [M, U, Bm, W]  (M updates, U micro-batches each)
    tokens: unpack_idx/mask/old_logp          [M, U, Nm, R], adv [M, U, Nm]
`unpack_idx` is local to its micro-batch (b * W + w). Packed rows hold one group each
(shared_prefix_segment=1); the naive layout (one row per sample) uses shared_prefix_segment=None.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from qwenlong_jax.config import RLConfig
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.rl import logprobs as logprobs_lib
from qwenlong_jax.rl.packing import PackedRows
from qwenlong_jax.rl.policy_loss import actor_loss
from qwenlong_jax.train_state import TrainState, apply_update

ROW_KEYS = ("tokens_BW", "positions_BW", "segment_ids_BW", "src_BW")


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The static part of the objective (hashable: a jit static argument)."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    agg: str = "token-mean"
    entropy_coeff: float = 0.001
    temperature: float = 1.0
    shared_prefix_segment: int | None = 1

    @classmethod
    def from_rl(cls, rl: RLConfig, packed: bool = True) -> "LossSettings":
        return cls(rl.clip_low, rl.clip_high, rl.loss_agg, rl.entropy_coeff, rl.temperature,
                   1 if packed else None)


def micro_logprobs(cfg: ModelConfig, params, mb: dict, ls: LossSettings):
    logp_BW, ent_BW = logprobs_lib.row_logprobs(
        cfg, params, mb["tokens_BW"], mb["positions_BW"], mb["segment_ids_BW"], mb["src_BW"],
        shared_prefix_segment=ls.shared_prefix_segment, temperature=ls.temperature,
    )
    idx = mb["unpack_idx_NR"]
    return logprobs_lib.unpack(logp_BW, idx), logprobs_lib.unpack(ent_BW, idx)


def grpo_loss(cfg: ModelConfig, ls: LossSettings, params, mb: dict):
    logp_NR, ent_NR = micro_logprobs(cfg, params, mb, ls)
    loss, stats = actor_loss(
        logp_NR, mb["old_logp_NR"], mb["adv_N"], mb["mask_NR"], entropy_BT=ent_NR,
        clip_low=ls.clip_low, clip_high=ls.clip_high, agg=ls.agg, entropy_coeff=ls.entropy_coeff,
    )
    return loss, stats


def grpo_update(cfg: ModelConfig, ls: LossSettings, tx: optax.GradientTransformation,
                state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    """M optimizer updates (one per mini-batch), each accumulating U micro-batches."""

    def one(state, mini):
        return apply_update(state, tx, lambda p, mb: grpo_loss(cfg, ls, p, mb), mini)

    state, metrics = jax.lax.scan(one, state, batch)
    out = {k: jnp.mean(v) for k, v in metrics.items()}
    out["skipped"] = jnp.sum(metrics["skipped"])
    return state, out


def policy_logprobs(cfg: ModelConfig, ls: LossSettings, params, batch: dict) -> jax.Array:
    """old_logp [M, U, Nm, R] of the current policy (the reference recomputes it before updating)."""
    f = lambda mb: micro_logprobs(cfg, jax.lax.stop_gradient(params), mb, ls)[0]
    return jax.lax.map(lambda mini: jax.lax.map(f, mini), batch)


def grpo_batch(rows: PackedRows, adv_N: np.ndarray, num_updates: int, num_micro: int,
               old_logp_NR: np.ndarray | None = None) -> dict:
    """Reshape packed rows [B, W] / tokens [N, R] into [M, U, ...] and localise unpack_idx."""
    B, W = rows.tokens_BW.shape
    N, R = rows.mask_NR.shape
    if B % (num_updates * num_micro) or N % B:
        raise ValueError(f"{B} rows do not split into {num_updates} updates x {num_micro} micro-batches")
    Bm = B // (num_updates * num_micro)
    per_row = N // B
    Nm = Bm * per_row
    out = {k: getattr(rows, k).reshape(num_updates, num_micro, Bm, W) for k in ROW_KEYS}
    # Flat packed index b * W + w  ->  index local to the micro-batch.
    row_of_n = np.arange(N) // per_row
    local = rows.unpack_idx_NR - (row_of_n - row_of_n % Bm)[:, None] * W
    out["unpack_idx_NR"] = local.reshape(num_updates, num_micro, Nm, R).astype(np.int32)
    out["mask_NR"] = rows.mask_NR.reshape(num_updates, num_micro, Nm, R)
    out["adv_N"] = np.asarray(adv_N, np.float32).reshape(num_updates, num_micro, Nm)
    old = np.zeros((N, R), np.float32) if old_logp_NR is None else old_logp_NR
    out["old_logp_NR"] = np.asarray(old, np.float32).reshape(num_updates, num_micro, Nm, R)
    return out
