"""PPO-clip policy loss (GRPO/DAPO actor objective) as pure jnp array functions.

    loss, stats = policy_loss(logp_BT, old_logp_BT, adv_B, mask_BT, clip_low=0.2, clip_high=0.2,
                              agg="token-mean")
    loss, stats = actor_loss(logp_BT, old_logp_BT, adv_B, mask_BT, entropy_BT=..., ref_logp_BT=...,
                             entropy_coeff=1e-3, kl_coef=0.0, ...)

Follows verl `core_algos.compute_policy_loss` and `agg_loss` (docs/recipe.md "The RL objective"):
  ratio = exp(logp - old_logp)
  per-token loss = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))
  clip_frac = masked mean of [clipped term > unclipped term] (strictly)
  approx_kl = masked mean of (old_logp - logp)

Aggregation ("agg"):
  token-mean            sum(loss * mask) / sum(mask) over the whole micro-batch; 0 if sum(mask)==0
                        (verl's masked_mean divides by sum(mask) + 1e-8: the same for integer
                        counts in float32, and 0 for an empty mask).
  seq-mean-token-mean   each row's sum(loss * mask) / max(len, 1), then the plain mean over all B
                        rows: a row with no valid token adds 0 but still counts in B. (verl divides
                        by len without the max and returns NaN for such a row.)
  seq-mean-token-sum    each row's sum(loss * mask), then the mean over B (verl's mode, for parity).

Where this departs from (or pins down) the reference:
- Like current verl, logp - old_logp is clamped to [-20, 20] before exp (no effect unless a token's
  log-ratio exceeds 20, where it prevents inf/NaN); approx_kl uses the clamped value too.
- No dual clip (verl's clip_ratio_c for A < 0): docs/recipe.md says none.
- actor_loss: the entropy bonus and the KL penalty are token-level masked means whatever `agg` is
  (docs/recipe.md); newer verl aggregates them with `agg` too. With the default "token-mean" they agree.
- Gradient accumulation over micro-batches is the caller's business: token-mean is per call.
"""

from __future__ import annotations

from typing import Literal, get_args

import jax.numpy as jnp

from qwenlong_jax.rl.advantages import token_advantages
from qwenlong_jax.rl.kl import KLKind, kl_penalty

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
AGG_MODES: tuple[str, ...] = get_args(AggMode)

# verl clamps the log-ratio before exp "for stability"; same constant.
_LOG_RATIO_CLAMP = 20.0


def _check_BT(name: str, x, shape) -> None:
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (as mask_BT), got {x.shape}")


def agg_loss(loss_BT: jnp.ndarray, mask_BT: jnp.ndarray, agg: AggMode) -> jnp.ndarray:
    """Reduce a per-token [B, T] matrix to a scalar under `agg`; padding (mask 0) never counts."""
    if agg not in AGG_MODES:
        raise ValueError(f"agg must be one of {AGG_MODES}, got {agg!r}")
    if loss_BT.ndim != 2 or loss_BT.shape != mask_BT.shape:
        raise ValueError(f"need loss_BT and mask_BT of one [B, T] shape, got {loss_BT.shape} and {mask_BT.shape}")
    m_BT = mask_BT.astype(jnp.float32)
    # where, not just multiply: a NaN/inf in padding must not reach the sum (0 * inf = NaN).
    masked_BT = jnp.where(m_BT != 0, loss_BT.astype(jnp.float32) * m_BT, 0.0)
    if agg == "token-mean":
        return jnp.sum(masked_BT) / jnp.maximum(jnp.sum(m_BT), 1.0)
    row_sum_B = jnp.sum(masked_BT, axis=-1)
    if agg == "seq-mean-token-mean":
        return jnp.mean(row_sum_B / jnp.maximum(jnp.sum(m_BT, axis=-1), 1.0))
    return jnp.mean(row_sum_B)  # seq-mean-token-sum


def _masked_mean(x_BT: jnp.ndarray, m_BT: jnp.ndarray) -> jnp.ndarray:
    return agg_loss(x_BT, m_BT, "token-mean")


def coef_sum(x_BT: jnp.ndarray, mask_BT: jnp.ndarray, coef_BT: jnp.ndarray) -> jnp.ndarray:
    """sum(x * coef) over the valid tokens: a loss whose per-token weights the caller computed
    (e.g. rl.dynamic_batch); padding never counts."""
    return jnp.sum(jnp.where(mask_BT != 0, x_BT.astype(jnp.float32) * coef_BT.astype(jnp.float32), 0.0))


def policy_loss_tokens(
    logp_BT: jnp.ndarray,
    old_logp_BT: jnp.ndarray,
    adv_BT: jnp.ndarray,
    mask_BT: jnp.ndarray,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: AggMode = "token-mean",
    token_coef_BT: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Clipped policy loss with a per-token advantage [B, T]; see the module docstring.
    token_coef_BT: aggregate as sum(loss * coef) instead of `agg` (the statistics stay means)."""
    shape = mask_BT.shape
    if len(shape) != 2:
        raise ValueError(f"mask_BT must be [B, T], got shape {shape}")
    for name, x in (("logp_BT", logp_BT), ("old_logp_BT", old_logp_BT), ("adv_BT", adv_BT)):
        _check_BT(name, x, shape)
    # Checked when given as Python numbers (config values); traced values pass through.
    if (
        isinstance(clip_low, (int, float))
        and isinstance(clip_high, (int, float))
        and (not 0.0 <= clip_low < 1.0 or clip_high < 0.0)
    ):
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
    m_BT = mask_BT.astype(jnp.float32)
    logp_BT = logp_BT.astype(jnp.float32)
    old_logp_BT = old_logp_BT.astype(jnp.float32)
    adv_BT = adv_BT.astype(jnp.float32)

    log_ratio_BT = jnp.clip(logp_BT - old_logp_BT, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    ratio_BT = jnp.exp(log_ratio_BT)
    unclipped_BT = -adv_BT * ratio_BT
    clipped_BT = -adv_BT * jnp.clip(ratio_BT, 1.0 - clip_low, 1.0 + clip_high)
    loss_BT = jnp.maximum(unclipped_BT, clipped_BT)
    loss = agg_loss(loss_BT, m_BT, agg) if token_coef_BT is None else coef_sum(loss_BT, m_BT, token_coef_BT)

    is_clipped_BT = (clipped_BT > unclipped_BT).astype(jnp.float32)
    valid_BT = m_BT != 0
    stats = {
        "pg_loss": loss,
        "clip_frac": _masked_mean(is_clipped_BT, m_BT),
        # Which side clipped: ratio above 1+clip_high with A > 0 (clip-higher's concern), or
        # below 1-clip_low with A < 0.
        "clip_frac_high": _masked_mean(is_clipped_BT * (adv_BT > 0), m_BT),
        "clip_frac_low": _masked_mean(is_clipped_BT * (adv_BT < 0), m_BT),
        "approx_kl": _masked_mean(-log_ratio_BT, m_BT),
        "ratio_mean": _masked_mean(ratio_BT, m_BT),
        # ratio > 0, so 0 is a safe identity; an all-padding batch reports 0.
        "ratio_max": jnp.max(jnp.where(valid_BT, ratio_BT, 0.0)),
        "num_tokens": jnp.sum(m_BT),
    }
    return loss, stats


def policy_loss(
    logp_BT: jnp.ndarray,
    old_logp_BT: jnp.ndarray,
    adv_B: jnp.ndarray,
    mask_BT: jnp.ndarray,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: AggMode = "token-mean",
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Clipped policy loss with one advantage per sequence (GRPO outcome reward)."""
    return policy_loss_tokens(
        logp_BT, old_logp_BT, token_advantages(adv_B, mask_BT), mask_BT, clip_low=clip_low, clip_high=clip_high, agg=agg
    )


def actor_loss(
    logp_BT: jnp.ndarray,
    old_logp_BT: jnp.ndarray,
    adv_B: jnp.ndarray,
    mask_BT: jnp.ndarray,
    *,
    entropy_BT: jnp.ndarray | None = None,
    ref_logp_BT: jnp.ndarray | None = None,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: AggMode = "token-mean",
    entropy_coeff: float = 0.0,
    kl_coef: float = 0.0,
    kl_kind: KLKind = "low_var_kl",
    token_weight_BT: jnp.ndarray | None = None,
    token_coef_BT: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """pg_loss - entropy_coeff * entropy (+ kl_coef * kl when ref_logp_BT is given).

    entropy_BT (per-token entropy of the temperature-scaled policy) is optional for the loss when
    entropy_coeff == 0; when given it is always reported. The KL term needs ref_logp_BT.
    token_weight_BT (> 0, no gradient) multiplies each token's clipped policy loss, e.g.
    truncated importance-sampling weights for the sampler/trainer mismatch; it is applied to
    the advantage, which is the same thing for a positive weight: max(-wA r, -wA clip(r)) =
    w max(-A r, -A clip(r)).
    token_coef_BT (no gradient): every loss term (policy, entropy, KL) is sum(term * coef) over
    the valid tokens instead of its mean -- the caller's own weighting of the tokens, as the
    reference's dynamic batching weighs each micro-batch's token means (rl/dynamic_batch.py).
    The reported entropy and KL stay token means.
    """
    adv_BT = token_advantages(adv_B, mask_BT)
    if token_weight_BT is not None:
        _check_BT("token_weight_BT", token_weight_BT, mask_BT.shape)
        adv_BT = adv_BT * token_weight_BT.astype(jnp.float32)
    if token_coef_BT is not None:
        _check_BT("token_coef_BT", token_coef_BT, mask_BT.shape)
    loss, stats = policy_loss_tokens(
        logp_BT,
        old_logp_BT,
        adv_BT,
        mask_BT,
        clip_low=clip_low,
        clip_high=clip_high,
        agg=agg,
        token_coef_BT=token_coef_BT,
    )
    term = (
        (lambda x_BT, mean: mean)
        if token_coef_BT is None
        else (lambda x_BT, mean: coef_sum(x_BT, mask_BT, token_coef_BT))
    )
    if entropy_coeff != 0.0 and entropy_BT is None:
        raise ValueError(f"entropy_coeff={entropy_coeff} needs entropy_BT")
    if kl_coef != 0.0 and ref_logp_BT is None:
        raise ValueError(f"kl_coef={kl_coef} needs ref_logp_BT (a reference policy)")
    if entropy_BT is not None:
        _check_BT("entropy_BT", entropy_BT, mask_BT.shape)
        entropy = _masked_mean(entropy_BT, mask_BT)
        loss = loss - entropy_coeff * term(entropy_BT, entropy)
        stats["entropy"] = entropy
    if ref_logp_BT is not None:
        _check_BT("ref_logp_BT", ref_logp_BT, mask_BT.shape)
        kl_BT = kl_penalty(logp_BT, ref_logp_BT, kl_kind)
        kl = _masked_mean(kl_BT, mask_BT)
        loss = loss + kl_coef * term(kl_BT, kl)
        stats["kl"] = kl
    stats["actor_loss"] = loss
    return loss, stats
