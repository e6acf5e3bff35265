"""Per-token KL penalty estimators between the policy and a reference policy (pure jnp).

    kl_BT = kl_penalty(logp_BT, ref_logp_BT, kind)      # elementwise; aggregate with agg_loss

Follows verl `core_algos.kl_penalty` (estimators from J. Schulman, "Approximating KL divergence"),
with d = logp - ref_logp:
  "kl"  / "k1"          d
  "abs"                 |d|
  "mse" / "k2"          d^2 / 2
  "low_var_kl" / "k3"   verl's exact sequence: k = ref_logp - logp; k = clip(k, -20, 20) (against
                        exp overflow); kld = exp(k) - k - 1; return clip(kld, -10, 10).
                        (kld >= 0 always, so the outer clip only caps it at 10, where its gradient
                        becomes 0.) docs/recipe.md's "exp(k) - k - 1, clamped to [-10, 10]" is this.
The KL term is off in the QwenLong-L1 recipe (kl_coef 0); this is here for when a reference
policy is used.
"""

from __future__ import annotations

from typing import Literal, get_args

import jax.numpy as jnp

KLKind = Literal["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3"]
KL_KINDS: tuple[str, ...] = get_args(KLKind)


def kl_penalty(logp: jnp.ndarray, ref_logp: jnp.ndarray, kind: KLKind) -> jnp.ndarray:
    """Elementwise KL estimate of the policy from the reference, float32, same shape as logp."""
    if kind not in KL_KINDS:
        raise ValueError(f"kind must be one of {KL_KINDS}, got {kind!r}")
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp {logp.shape} and ref_logp {ref_logp.shape} must have one shape")
    logp = logp.astype(jnp.float32)
    ref_logp = ref_logp.astype(jnp.float32)
    if kind in ("kl", "k1"):
        return logp - ref_logp
    if kind == "abs":
        return jnp.abs(logp - ref_logp)
    if kind in ("mse", "k2"):
        return 0.5 * jnp.square(logp - ref_logp)
    k = jnp.clip(ref_logp - logp, -20.0, 20.0)
    return jnp.clip(jnp.exp(k) - k - 1.0, -10.0, 10.0)
