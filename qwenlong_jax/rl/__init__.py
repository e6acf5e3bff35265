"""RL math: advantages, policy loss, KL, entropy, dynamic sampling (pure array functions)."""

from qwenlong_jax.rl.advantages import group_advantages, token_advantages
from qwenlong_jax.rl.dynamic_sampling import DynamicSampler, varying_groups
from qwenlong_jax.rl.entropy import (
    chunked_logprobs_and_entropy,
    entropy_from_logits,
    logprobs_and_entropy_from_logits,
)
from qwenlong_jax.rl.kl import KL_KINDS, KLKind, kl_penalty
from qwenlong_jax.rl.policy_loss import (
    AGG_MODES,
    AggMode,
    actor_loss,
    agg_loss,
    policy_loss,
    policy_loss_tokens,
)

__all__ = [
    "AGG_MODES",
    "KL_KINDS",
    "AggMode",
    "DynamicSampler",
    "KLKind",
    "actor_loss",
    "agg_loss",
    "chunked_logprobs_and_entropy",
    "entropy_from_logits",
    "group_advantages",
    "kl_penalty",
    "logprobs_and_entropy_from_logits",
    "policy_loss",
    "policy_loss_tokens",
    "token_advantages",
    "varying_groups",
]
