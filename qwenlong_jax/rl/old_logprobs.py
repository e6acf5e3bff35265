"""The pass before a GRPO update: the current policy's log-probs of the sampled tokens (old_logp) and
their agreement with the sampler's own log-probs (diagnostics, and the truncated importance weights
when rl.tis_cap > 0)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.rl.grpo_step import LossSettings, micro_logprobs


def rollout_agreement(
    sampler_logp_NR: jax.Array, old_logp_NR: jax.Array, mask_NR: jax.Array, tis_cap: float = 0.0
) -> tuple[jax.Array, dict]:
    """Sampler vs trainer log-probabilities of the sampled tokens (any matching shapes).

    Returns (is_weight, stats): is_weight = min(exp(old_logp - sampler_logp), tis_cap) on real
    tokens (truncated importance sampling; ones when tis_cap is 0), and stats: mean and max of
    |sampler_logp - old_logp| and KL(sampler || trainer), estimated on the sampled tokens with
    the low-variance estimator exp(k) - k - 1, k = old_logp - sampler_logp."""
    m = mask_NR.astype(jnp.float32)
    valid = m > 0
    n = jnp.maximum(jnp.sum(m), 1.0)
    d = jnp.where(valid, old_logp_NR - sampler_logp_NR, 0.0)
    k = jnp.clip(d, -20.0, 20.0)
    stats = {
        "rollout/logp_diff_mean": jnp.sum(jnp.abs(d)) / n,
        "rollout/logp_diff_max": jnp.max(jnp.abs(d)),
        # exp(k) - k - 1 >= 0; the max only removes float round-off near k = 0.
        "rollout/kl": jnp.sum(jnp.where(valid, jnp.maximum(jnp.exp(k) - k - 1.0, 0.0), 0.0)) / n,
    }
    if tis_cap:
        w = jnp.where(valid, jnp.minimum(jnp.exp(k), tis_cap), 1.0)
        stats["rollout/tis_weight_mean"] = jnp.sum(w * m) / n
        stats["rollout/tis_capped_frac"] = jnp.sum((jnp.exp(k) > tis_cap) * m) / n
    else:
        w = jnp.ones_like(m)
    return w, stats


def policy_logprobs(cfg: ModelConfig, ls: LossSettings, params, batch: dict) -> jax.Array:
    """old_logp [M, U, Nm, R] of the current policy (the reference recomputes it before updating)."""

    def f(mb):
        return micro_logprobs(cfg, jax.lax.stop_gradient(params), mb, ls)[0]

    return jax.lax.map(lambda mini: jax.lax.map(f, mini), batch)
