"""The GRPO/DAPO update and the policy-logprob pass, as pure functions over device arrays.

Batch layout (host arrays from rl.packing, reshaped by `grpo_batch`):
    rows:   tokens/positions/segment_ids/src  [M, U, Bm, W]  (M updates, U micro-batches each)
    tokens: unpack_idx/mask/old_logp          [M, U, Nm, R], adv [M, U, Nm]
    optional, same layout as old_logp: ref_logp (rl.kl_coef > 0), is_weight (rl.tis_cap > 0),
    coef (rl.loss_scope = "dynamic", from rl.dynamic_batch.token_coef)
`unpack_idx` is local to its micro-batch (b * W + w). Packed rows hold one group each
(shared_prefix_segment=1); the naive layout (one row per sample) uses shared_prefix_segment=None.

Weighting (`grpo_update`): an update whose mini-batch has no real response token is not applied
(state bitwise unchanged; `empty_updates` counts it). Otherwise the micro-batches combine as
`LossSettings.scope` says:
  "mini_batch"   the exact rl.loss_agg mean over the whole mini-batch: micro-batch u weighs
                 n_u / n (its share of the real tokens); for seq-mean-token-mean the policy term
                 is rescaled so each real sequence weighs 1 / (real sequences of the mini-batch)
                 (entropy and KL stay token means, as RECIPE's objective has them).
  "micro_batch"  plain gradient accumulation over the fixed micro-batches (verl without
                 dynamic batching): the mean of the per-micro-batch means, over the
                 micro-batches that hold a real token (padding never dilutes it).
  "dynamic"      the reference recipe's weighting (verl's use_dynamic_bsz): micro-batches of at
                 most rl.token_budget tokens, balanced by length, each micro-batch's token-mean
                 scaled by its share of the mini-batch's sequences (rl/dynamic_batch.py: the
                 host computes each token's coefficient; micro-batches combine by token share).
In all, a padding row (an empty response) is no sequence: seq-mean-token-mean means over real
rows. "mini_batch" and "micro_batch" agree when every micro-batch holds as many tokens
(sequences) as the others.
`epochs` passes run over the same M mini-batches in the same order (PPO epochs).
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
from qwenlong_jax.rl.kl import KLKind
from qwenlong_jax.rl.packing import PackedRows
from qwenlong_jax.rl.policy_loss import AggMode, actor_loss
from qwenlong_jax.run.train_state import TrainState, apply_update

ROW_KEYS = ("tokens_BW", "positions_BW", "segment_ids_BW", "src_BW")


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """The static part of the objective (hashable: a jit static argument)."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    agg: AggMode = "token-mean"
    entropy_coeff: float = 0.001
    temperature: float = 1.0
    shared_prefix_segment: int | None = 1
    kl_coef: float = 0.0  # > 0: the batch holds ref_logp_NR
    kl_type: KLKind = "low_var_kl"
    tis_cap: float = 0.0  # > 0: the batch holds is_weight_NR
    scope: str = "mini_batch"
    epochs: int = 1

    @classmethod
    def from_rl(cls, rl: RLConfig, packed: bool = True) -> LossSettings:
        return cls(
            rl.clip_low,
            rl.clip_high,
            rl.loss_agg,
            rl.entropy_coeff,
            rl.temperature,
            1 if packed else None,
            kl_coef=rl.kl_coef,
            kl_type=rl.kl_type,
            tis_cap=rl.tis_cap,
            scope=rl.loss_scope,
            epochs=rl.epochs,
        )

    @property
    def token_keys(self) -> tuple[str, ...]:
        """The [M, U, Nm, R] float arrays the update reads besides mask and old_logp."""
        return (
            (("ref_logp_NR",) if self.kl_coef else ())
            + (("is_weight_NR",) if self.tis_cap else ())
            + (("coef_NR",) if self.scope == "dynamic" else ())
        )


def micro_logprobs(cfg: ModelConfig, params, mb: dict, ls: LossSettings):
    logp_BW, ent_BW = logprobs_lib.row_logprobs(
        cfg,
        params,
        mb["tokens_BW"],
        mb["positions_BW"],
        mb["segment_ids_BW"],
        mb["src_BW"],
        shared_prefix_segment=ls.shared_prefix_segment,
        temperature=ls.temperature,
    )
    idx = mb["unpack_idx_NR"]
    return logprobs_lib.unpack(logp_BW, idx), logprobs_lib.unpack(ent_BW, idx)


def grpo_loss(cfg: ModelConfig, ls: LossSettings, params, mb: dict):
    """The actor loss of one micro-batch (its own means; `mb["pg_scale"]`, set by grpo_update,
    rescales the policy term for the exact seq-mean over a mini-batch)."""
    logp_NR, ent_NR = micro_logprobs(cfg, params, mb, ls)
    mask_NR = mb["mask_NR"]
    loss, stats = actor_loss(
        logp_NR,
        mb["old_logp_NR"],
        mb["adv_N"],
        mask_NR,
        entropy_BT=ent_NR,
        ref_logp_BT=mb["ref_logp_NR"] if ls.kl_coef else None,
        clip_low=ls.clip_low,
        clip_high=ls.clip_high,
        agg=ls.agg,
        entropy_coeff=ls.entropy_coeff,
        kl_coef=ls.kl_coef,
        kl_kind=ls.kl_type,
        token_weight_BT=mb["is_weight_NR"] if ls.tis_cap else None,
        token_coef_BT=mb["coef_NR"] if ls.scope == "dynamic" else None,
    )
    scale = jnp.asarray(mb.get("pg_scale", 1.0), jnp.float32)
    if ls.agg == "seq-mean-token-mean":  # mean over real rows: padding rows are no sequences
        n_rows = jnp.sum(jnp.any(mask_NR > 0, axis=-1))
        scale = scale * mask_NR.shape[0] / jnp.maximum(n_rows, 1)
    pg = stats["pg_loss"]
    loss = loss + pg * (scale - 1.0)
    stats["pg_loss"] = pg * scale
    stats["actor_loss"] = loss
    return loss, stats


def update_weights(mask_UNR: jax.Array, agg: str, scope: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(weights_U, pg_scale_U, apply) for one mini-batch's micro-batches (module docstring)."""
    m = mask_UNR.astype(jnp.float32)
    tok_U = jnp.sum(m, axis=(1, 2))
    seq_U = jnp.sum(jnp.any(m > 0, axis=-1), axis=-1).astype(jnp.float32)
    n_tok = jnp.sum(tok_U)
    if scope == "micro_batch":
        real_U = (tok_U > 0).astype(jnp.float32)
        return real_U / jnp.maximum(jnp.sum(real_U), 1.0), jnp.ones_like(tok_U), n_tok > 0
    if scope not in ("mini_batch", "dynamic"):
        raise ValueError(f"scope must be 'mini_batch', 'micro_batch' or 'dynamic', got {scope!r}")
    if scope == "dynamic" and agg != "token-mean":
        raise ValueError(f"scope 'dynamic' weighs token means; agg {agg!r} has none")
    w_U = tok_U / jnp.maximum(n_tok, 1.0)
    if agg == "seq-mean-token-mean":
        seq_share_U = seq_U / jnp.maximum(jnp.sum(seq_U), 1.0)
        scale_U = jnp.where(w_U > 0, seq_share_U / jnp.where(w_U > 0, w_U, 1.0), 0.0)
    else:
        scale_U = jnp.ones_like(tok_U)
    return w_U, scale_U, n_tok > 0


def grpo_update(
    cfg: ModelConfig, ls: LossSettings, tx: optax.GradientTransformation, state: TrainState, batch: dict
) -> tuple[TrainState, dict]:
    """ls.epochs x M optimizer updates (one per mini-batch), each accumulating U micro-batches.

    Returns (state, metrics): scalars averaged over the applied updates, `updates` (applied),
    `empty_updates` (no real token: not applied), `nonfinite_updates` (non-finite loss or
    gradient: not applied), `ratio_max` (the largest ratio of any real token in an applied
    update), and `by_update`, the per-update metrics [epochs * M] in order (`empty`,
    `nonfinite` flags; `ratio_max` each update's largest ratio)."""

    def one(state, mini):
        w_U, scale_U, apply = update_weights(mini["mask_NR"], ls.agg, ls.scope)
        mini = {**mini, "pg_scale": scale_U}
        return apply_update(
            state,
            tx,
            lambda p, mb: grpo_loss(cfg, ls, p, mb),
            mini,
            weights_U=w_U,
            apply=apply,
            max_keys=("ratio_max",),
        )

    def epoch(state, _):
        return jax.lax.scan(one, state, batch)

    state, metrics = jax.lax.scan(epoch, state, None, length=ls.epochs)
    by_update = {("nonfinite" if k == "skipped" else k): v.reshape(-1) for k, v in metrics.items()}
    used = ((by_update["empty"] == 0) & (by_update["nonfinite"] == 0)).astype(jnp.float32)
    n_used = jnp.sum(used)
    out: dict[str, Any] = {k: jnp.sum(v * used) / jnp.maximum(n_used, 1.0) for k, v in by_update.items()}
    del out["nonfinite"], out["empty"]
    out["nonfinite_updates"] = jnp.sum(by_update["nonfinite"])
    out["empty_updates"] = jnp.sum(by_update["empty"])
    out["updates"] = n_used
    out["ratio_max"] = jnp.max(jnp.where(used > 0, by_update["ratio_max"], 0.0))
    out["by_update"] = by_update
    return state, out


def grpo_batch(
    rows: PackedRows, adv_N: np.ndarray, num_updates: int, num_micro: int, old_logp_NR: np.ndarray | None = None
) -> dict:
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
