"""Per-token log-probabilities and entropies from temperature-scaled logits (pure jnp).

    ent_BT = entropy_from_logits(logits_BTV, temperature)                 # any [..., V]
    logp_T, ent_T = logprobs_and_entropy_from_logits(logits_TV, targets_T, temperature)
    logp_T, ent_T = chunked_logprobs_and_entropy(head_fn, head_params, hidden_TD, targets_T,
                                                 temperature, chunk_size)

As the reference (verl's actor) does, logits are divided by the rollout temperature before both
the log-probability and the entropy, so training-time logp matches the sampler's logprobs.
Entropy is computed as -sum(p * log p) from log_softmax (the max-shifted form), not verl's
logsumexp(z) - sum(p * z), which loses float32 precision when logits are large; the two agree
mathematically. Vocabulary entries with logit -inf (masked) contribute 0, with finite gradients.
The token-level masked mean of the entropy is `agg_loss(ent_BT, mask_BT, "token-mean")`.

`chunked_logprobs_and_entropy` applies the LM head chunk by chunk under `lax.scan` with
`jax.checkpoint`, so neither the forward nor the backward pass holds more than one [chunk, V]
slice of logits: for long packed rows the [T, V] logits never exist at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def _scaled_log_softmax(logits_XV: jnp.ndarray, temperature: float) -> jnp.ndarray:
    if isinstance(temperature, (int, float)) and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return jax.nn.log_softmax(logits_XV.astype(jnp.float32) / temperature, axis=-1)


def _entropy_from_logp(logp_XV: jnp.ndarray) -> jnp.ndarray:
    p_XV = jnp.exp(logp_XV)
    # p * log p -> 0 as p -> 0; guard the -inf entries so 0 * -inf never makes a NaN (nor its grad).
    safe_logp_XV = jnp.where(jnp.isfinite(logp_XV), logp_XV, 0.0)
    return -jnp.sum(p_XV * safe_logp_XV, axis=-1)


def entropy_from_logits(logits_XV: jnp.ndarray, temperature: float = 1.0) -> jnp.ndarray:
    """Entropy (nats) of softmax(logits / temperature) over the last axis; float32 [...]."""
    return _entropy_from_logp(_scaled_log_softmax(logits_XV, temperature))


def logprobs_and_entropy_from_logits(
    logits_XV: jnp.ndarray, targets_X: jnp.ndarray, temperature: float = 1.0
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(log p(target), entropy) under softmax(logits / temperature); both float32 [...]."""
    if logits_XV.shape[:-1] != targets_X.shape:
        raise ValueError(
            f"logits {logits_XV.shape} need targets of shape {logits_XV.shape[:-1]}, got {targets_X.shape}"
        )
    logp_XV = _scaled_log_softmax(logits_XV, temperature)
    target_logp_X = jnp.take_along_axis(logp_XV, targets_X[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return target_logp_X, _entropy_from_logp(logp_XV)


def chunked_logprobs_and_entropy(
    head_fn: Callable[[Any, jnp.ndarray], jnp.ndarray],
    head_params: Any,
    hidden_TD: jnp.ndarray,
    targets_T: jnp.ndarray,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """logprobs_and_entropy_from_logits(head_fn(head_params, hidden_TD), ...) one chunk at a time.

    head_fn(head_params, h_CD) -> logits_CV (e.g. final norm + LM head). T need not be a multiple
    of chunk_size: the tail is padded and the padding dropped from the outputs.
    """
    if hidden_TD.ndim != 2 or targets_T.shape != hidden_TD.shape[:1]:
        raise ValueError(f"need hidden_TD [T, D] and targets_T [T], got {hidden_TD.shape} and {targets_T.shape}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    t, d = hidden_TD.shape
    chunk_size = min(chunk_size, t)
    num_chunks = -(-t // chunk_size)
    pad = num_chunks * chunk_size - t
    h_NCD = jnp.pad(hidden_TD, ((0, pad), (0, 0))).reshape(num_chunks, chunk_size, d)
    tg_NC = jnp.pad(targets_T, (0, pad)).reshape(num_chunks, chunk_size)

    # Rematerialised: the backward pass recomputes this chunk's logits instead of keeping every
    # chunk's [C, V] residuals alive, which would rebuild the full [T, V] in memory.
    @jax.checkpoint
    def one_chunk(params, h_CD, tg_C):
        return logprobs_and_entropy_from_logits(head_fn(params, h_CD), tg_C, temperature)

    def body(carry, xs):
        return carry, one_chunk(head_params, *xs)

    _, (logp_NC, ent_NC) = jax.lax.scan(body, None, (h_NCD, tg_NC))
    return logp_NC.reshape(-1)[:t], ent_NC.reshape(-1)[:t]
