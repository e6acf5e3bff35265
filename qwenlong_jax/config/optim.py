"""The run config's optimisation sections: `optim` (AdamW and its schedule) and `rl` (GRPO/DAPO:
groups, clipping, KL, dynamic sampling, batch splits, rollouts), each with its own range checks.
Defaults follow QwenLong-L1's reference implementation (docs/recipe.md)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from qwenlong_jax.config.load import ConfigError, at_least, positive

LossAgg = Literal["token-mean", "seq-mean-token-mean"]
KLType = Literal["kl", "abs", "mse", "low_var_kl"]
LossScope = Literal["mini_batch", "micro_batch", "dynamic"]
Sampler = Literal["lockstep", "group_refill"]  # sampling/samplers.py


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-6
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    warmup_steps: int = 0
    schedule: Literal["constant", "cosine"] = "constant"
    max_nonfinite_in_a_row: int = 5

    def __post_init__(self):
        positive("optim.lr", self.lr)
        at_least("optim.weight_decay", self.weight_decay, 0)
        positive("optim.grad_clip", self.grad_clip)
        for n in ("b1", "b2"):
            if not 0 <= getattr(self, n) < 1:
                raise ConfigError(f"optim.{n} must be in [0, 1), got {getattr(self, n)}")
        at_least("optim.warmup_steps", self.warmup_steps, 0)
        at_least("optim.max_nonfinite_in_a_row", self.max_nonfinite_in_a_row, 1)


@dataclasses.dataclass(frozen=True)
class RLConfig:
    group_size: int = 8
    clip_low: float = 0.2
    clip_high: float = 0.2  # DAPO clip-higher: 0.28
    loss_agg: LossAgg = "token-mean"
    normalize_std: bool = True  # False = Dr.GRPO (mean-centred only)
    entropy_coeff: float = 0.001
    # KL to a reference policy: kl_coef > 0 adds kl_coef * (token-mean kl_type penalty) to the
    # loss. The reference is a frozen copy of each RL phase's starting policy, or the HF
    # checkpoint `ref_from` when set.
    kl_coef: float = 0.0
    kl_type: KLType = "low_var_kl"
    ref_from: str = ""
    dynamic_sampling: bool = True
    max_gen_rounds: int = 10
    gen_batch: int = 0  # prompts per generation round (0 = the phase batch; the recipe: 3x)
    mini_batch: int = 32  # prompts per optimizer update (train batch / mini_batch updates)
    micro_batch: int = 0  # packed groups per forward/backward (0 = the whole mini-batch)
    # How micro-batches of one update combine (rl.loss_agg is the per-token/per-sequence mean):
    # "mini_batch" = the exact mean over the whole mini-batch (each micro-batch weighted by its
    # real tokens, or real sequences for seq-mean-token-mean); "micro_batch" = plain gradient
    # accumulation, the mean of per-micro-batch means (verl without dynamic batching;
    # micro-batches without a real token get weight 0); "dynamic" = the reference recipe's
    # dynamic batching (verl use_dynamic_bsz): micro-batches of at most `token_budget` tokens
    # (prompt + response), balanced by length, each one's token-mean scaled by its share of
    # the sequences (rl/dynamic_batch.py; token-mean only).
    loss_scope: LossScope = "mini_batch"
    token_budget: int = 0  # loss_scope="dynamic": tokens per micro-batch (verl ppo_max_token_len_per_gpu)
    rollout_batch: int = 0  # prompts per sampling call (0 = the whole batch): bounds the KV cache
    # How the rollout schedules its samples (same samples token for token): "lockstep" calls of
    # rollout_batch prompts, or "group_refill": rollout_batch prompt slots, a slot refilled with
    # the next prompt as soon as its G samples are done (docs/rollout_performance.md).
    sampler: Sampler = "lockstep"
    epochs: int = 1  # PPO epochs: passes over the step's batch (each pass = batch/mini_batch updates)
    # Truncated importance sampling of the sampler/trainer mismatch: each token's loss weighted by
    # min(exp(old_logp - sampler_logp), tis_cap) (old_logp recomputed by the trainer). 0 = off.
    tis_cap: float = 0.0
    # Overlong reward shaping (tokens).
    overlong_buffer: int = 1000
    overlong_factor: float = 1.0
    # Rollouts.
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0

    def __post_init__(self):
        at_least("rl.group_size", self.group_size, 2)
        for n in ("clip_low", "clip_high"):
            if not 0 <= getattr(self, n) < 1:
                raise ConfigError(f"rl.{n} must be in [0, 1), got {getattr(self, n)}")
        at_least("rl.max_gen_rounds", self.max_gen_rounds, 1)
        at_least("rl.mini_batch", self.mini_batch, 1)
        at_least("rl.micro_batch", self.micro_batch, 0)
        at_least("rl.gen_batch", self.gen_batch, 0)
        at_least("rl.rollout_batch", self.rollout_batch, 0)
        at_least("rl.epochs", self.epochs, 1)
        at_least("rl.token_budget", self.token_budget, 0)
        if self.loss_scope == "dynamic":
            if not self.token_budget:
                raise ConfigError(
                    "rl.token_budget must be > 0 with rl.loss_scope='dynamic' (the reference: "
                    "ppo_max_token_len_per_gpu)"
                )
            if self.loss_agg != "token-mean":
                raise ConfigError(
                    f"rl.loss_scope='dynamic' weighs token means; with rl.loss_agg="
                    f"{self.loss_agg!r} it equals 'mini_batch': use that"
                )
        elif self.token_budget:
            raise ConfigError(
                f"rl.token_budget={self.token_budget} is read only with rl.loss_scope='dynamic' "
                f"(got {self.loss_scope!r}); set it to 0"
            )
        at_least("rl.kl_coef", self.kl_coef, 0)
        if self.tis_cap and self.tis_cap < 1:
            raise ConfigError(f"rl.tis_cap must be 0 (off) or >= 1, got {self.tis_cap}")
        positive("rl.temperature", self.temperature)
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"rl.top_p must be in (0, 1], got {self.top_p}")
        at_least("rl.top_k", self.top_k, 0)  # 0 = no top-k filter
        at_least("rl.overlong_buffer", self.overlong_buffer, 0)
        at_least("rl.overlong_factor", self.overlong_factor, 0)
