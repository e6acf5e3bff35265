"""Sampling strategies: tiny frozen dataclasses that turn next-token logits into tokens.

    strategy = SamplingParams(temperature=1.0, top_p=0.95, top_k=0, min_p=0.0)   # or TopP(0.95)
    tokens_N, logprobs_N = sample_tokens(strategy, logits_NV, keys_N)

Each strategy has a `temperature` (0 means greedy) and `filter(scaled_logits_NV)`, which sets
the logits of excluded tokens to -inf. `SamplingParams` composes them in the order HF and vLLM
use: top-k, then top-p on the renormalised survivors, then min-p.

Logprobs. The returned logprob of a token is taken under the UNFILTERED temperature-scaled
distribution, log_softmax(logits / T), not under the truncated (top-p/top-k/min-p renormalised)
distribution that the token was drawn from. Why: the GRPO importance ratio
pi_theta(y) / pi_old(y) is computed by the trainer, which recomputes log pi_theta with a plain
forward pass and log_softmax(logits / T) — it has no notion of the truncation set, which would
move as theta changes. If the rollout logprob were the renormalised one, old and new logprobs
would live on different distributions and the ratio would be biased by the log of the kept mass
(log sum_{kept} p) even at theta == theta_old, so the clip would act on a constant offset
instead of the policy change. Using log_softmax(logits / T) on both sides makes the ratio
exactly 1 on-policy. Greedy returns log_softmax(logits) (T = 1).
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


class Strategy(Protocol):
    temperature: float

    def filter(self, scaled_logits_NV: jax.Array) -> jax.Array: ...


def _check_temperature(t: float) -> None:
    if not t > 0:
        raise ValueError(f"temperature must be > 0 for sampling (use Greedy for 0), got {t}")


@dataclasses.dataclass(frozen=True)
class Greedy:
    temperature: float = dataclasses.field(default=0.0, init=False)

    def filter(self, scaled_logits_NV):
        return scaled_logits_NV


@dataclasses.dataclass(frozen=True)
class Temperature:
    temperature: float = 1.0

    def __post_init__(self):
        _check_temperature(self.temperature)

    def filter(self, scaled_logits_NV):
        return scaled_logits_NV


@dataclasses.dataclass(frozen=True)
class TopK:
    """Keep the k largest logits (ties at the k-th value are all kept)."""

    k: int
    temperature: float = 1.0

    def __post_init__(self):
        _check_temperature(self.temperature)
        if not isinstance(self.k, int) or self.k <= 0:
            raise ValueError(f"top_k must be a positive int, got {self.k!r}")

    def filter(self, scaled_logits_NV):
        k = min(self.k, scaled_logits_NV.shape[-1])
        kth_N1 = jax.lax.top_k(scaled_logits_NV, k)[0][..., -1:]
        return jnp.where(scaled_logits_NV < kth_N1, NEG_INF, scaled_logits_NV)


@dataclasses.dataclass(frozen=True)
class TopP:
    """Nucleus: keep the smallest set of most likely tokens whose mass reaches p (HF rule: a
    token is dropped when the mass of the tokens strictly more likely than it is >= p)."""

    p: float
    temperature: float = 1.0

    def __post_init__(self):
        _check_temperature(self.temperature)
        if not 0 < self.p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.p}")

    def filter(self, scaled_logits_NV):
        probs_NV = jax.nn.softmax(scaled_logits_NV, axis=-1)
        order_NV = jnp.argsort(-scaled_logits_NV, axis=-1)
        sorted_NV = jnp.take_along_axis(probs_NV, order_NV, axis=-1)
        mass_before_NV = jnp.cumsum(sorted_NV, axis=-1) - sorted_NV
        drop_sorted_NV = mass_before_NV >= self.p
        drop_NV = (
            jnp.zeros_like(drop_sorted_NV).at[jnp.arange(order_NV.shape[0])[:, None], order_NV].set(drop_sorted_NV)
        )
        return jnp.where(drop_NV, NEG_INF, scaled_logits_NV)


@dataclasses.dataclass(frozen=True)
class MinP:
    """Keep tokens with probability >= p * (max probability)."""

    p: float
    temperature: float = 1.0

    def __post_init__(self):
        _check_temperature(self.temperature)
        if not 0 <= self.p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.p}")

    def filter(self, scaled_logits_NV):
        # p_i >= p * p_max  <=>  logit_i >= logit_max + log(p)
        max_N1 = jnp.max(scaled_logits_NV, axis=-1, keepdims=True)
        return jnp.where(scaled_logits_NV < max_N1 + jnp.log(self.p), NEG_INF, scaled_logits_NV)


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """All knobs at once (the `generate` flags): temperature 0 is greedy; top_p=1, top_k=0 and
    min_p=0 switch their filter off."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")

    def filters(self) -> tuple:
        t = self.temperature or 1.0
        out: list[TopK | TopP | MinP] = []
        if self.top_k:
            out.append(TopK(self.top_k, t))
        if self.top_p < 1.0:
            out.append(TopP(self.top_p, t))
        if self.min_p > 0.0:
            out.append(MinP(self.min_p, t))
        return tuple(out)

    def filter(self, scaled_logits_NV):
        for f in self.filters():
            scaled_logits_NV = f.filter(scaled_logits_NV)
        return scaled_logits_NV


GREEDY = Greedy()  # the default strategy (frozen: one instance serves every call)
AnyStrategy = Greedy | Temperature | TopK | TopP | MinP | SamplingParams


def sample_tokens(strategy: AnyStrategy, logits_NV: jax.Array, keys_N: jax.Array):
    """Draw one token per row. keys_N: one typed PRNG key per row (rows are independent, so a
    row's draw does not depend on which other rows share the batch).

    Returns (tokens_N int32, logprobs_N float32 under log_softmax(logits / T); see module doc).
    """
    logits_NV = logits_NV.astype(jnp.float32)
    if strategy.temperature == 0:
        tokens_N = jnp.argmax(logits_NV, axis=-1).astype(jnp.int32)
        logp_NV = jax.nn.log_softmax(logits_NV, axis=-1)
    else:
        scaled_NV = logits_NV / strategy.temperature
        logp_NV = jax.nn.log_softmax(scaled_NV, axis=-1)
        filtered_NV = strategy.filter(scaled_NV)
        tokens_N = jax.vmap(jax.random.categorical)(keys_N, filtered_NV).astype(jnp.int32)
    logprobs_N = jnp.take_along_axis(logp_NV, tokens_N[:, None], axis=-1)[:, 0]
    return tokens_N, logprobs_N


def from_flags(temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0) -> AnyStrategy:
    """The strategy the `generate` flags describe (Greedy when temperature is 0)."""
    if temperature == 0:
        return Greedy()
    return SamplingParams(temperature, top_p, top_k, min_p)
