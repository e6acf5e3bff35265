"""GRPO group advantages (outcome reward, one scalar per response), as pure jnp functions.

    adv_N = group_advantages(rewards_N, group_size)    # groups are contiguous runs of G
    adv_BT = token_advantages(adv_B, mask_BT)          # broadcast over tokens, 0 on padding

Follows verl `core_algos.compute_grpo_outcome_advantage` (the reference implementation's):
  A = (r - mean) / (std + eps), std the UNBIASED (n-1) sample std, eps added to the std (not
  under the root). With `normalize_std=False` it is Dr.GRPO: A = r - mean.

Where this departs from the reference, on purpose:
- A group whose scores are all equal gets exactly 0. verl computes (r - mean) / (std + eps) in
  float32, where the mean of 8 copies of 0.3 is off by one ulp: the residue ~3e-8 over
  (3e-8 + 1e-6) gives |A| ~ 0.03 instead of 0. docs/recipe.md states "equal scores give 0", which is
  the intent (no learning signal from a zero-variance group), so we force it.
- Group size 1 follows verl, which special-cases it (mean 0, std 1, so A = r / (1 + eps), or r
  without std normalisation) rather than torch.std's NaN for one sample. It is a degenerate
  setting (no baseline); we keep the reference's numbers rather than invent others.
"""

from __future__ import annotations

import jax.numpy as jnp


def group_advantages(
    rewards_N: jnp.ndarray, group_size: int, normalize_std: bool = True, eps: float = 1e-6
) -> jnp.ndarray:
    """Per-response GRPO advantage, float32 [N]; responses i*G .. i*G+G-1 form group i."""
    if rewards_N.ndim != 1:
        raise ValueError(f"rewards_N must be 1-D [N], got shape {rewards_N.shape}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    n = rewards_N.shape[0]
    if n % group_size:
        raise ValueError(f"rewards_N has {n} entries, not a multiple of group_size={group_size}")
    r_NgG = rewards_N.astype(jnp.float32).reshape(n // group_size, group_size)
    if group_size == 1:
        # verl: a lone sample gets mean 0 and std 1.
        adv_NgG = r_NgG / (1.0 + eps) if normalize_std else r_NgG
        return adv_NgG.reshape(n)
    mean_Ng1 = jnp.mean(r_NgG, axis=-1, keepdims=True)
    centered_NgG = r_NgG - mean_Ng1
    if normalize_std:
        # torch.std default: unbiased, sqrt(sum((r - mean)^2) / (G - 1)).
        std_Ng1 = jnp.sqrt(jnp.sum(centered_NgG * centered_NgG, axis=-1, keepdims=True) / (group_size - 1))
        adv_NgG = centered_NgG / (std_Ng1 + eps)
    else:
        adv_NgG = centered_NgG
    all_equal_Ng1 = jnp.max(r_NgG, axis=-1, keepdims=True) == jnp.min(r_NgG, axis=-1, keepdims=True)
    adv_NgG = jnp.where(all_equal_Ng1, 0.0, adv_NgG)
    return adv_NgG.reshape(n)


def token_advantages(adv_B: jnp.ndarray, mask_BT: jnp.ndarray) -> jnp.ndarray:
    """Broadcast one advantage per sequence over its tokens; exactly 0 where mask is 0."""
    if adv_B.ndim != 1 or mask_BT.ndim != 2 or adv_B.shape[0] != mask_BT.shape[0]:
        raise ValueError(f"need adv_B [B] and mask_BT [B, T], got {adv_B.shape} and {mask_BT.shape}")
    # where, not multiply: a non-finite advantage must not leak into padding as NaN.
    return jnp.where(mask_BT.astype(bool), adv_B.astype(jnp.float32)[:, None], 0.0)
