"""Per-token log-probabilities (and entropies) of the policy on packed or plain rows.

The LM head runs chunk by chunk over the gathered source hidden states
(rl.entropy.chunked_logprobs_and_entropy), so [rows x W, V] logits never exist at once.
Logits are divided by the rollout temperature, matching the sampler's logprobs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qwenlong_jax.models import transformer
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.rl.entropy import chunked_logprobs_and_entropy


def row_logprobs(
    cfg: ModelConfig,
    params: dict,
    tokens_BW: jax.Array,
    positions_BW: jax.Array,
    segment_ids_BW: jax.Array,
    src_BW: jax.Array,
    *,
    shared_prefix_segment: int | None,
    temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """(logp_BW, entropy_BW): log p(tokens[b, w] | hidden[b, src[b, w]]) under logits / T."""
    h_BWD = transformer.hidden_states(
        cfg, params, tokens_BW, positions_BW, segment_ids_BW, shared_prefix_segment=shared_prefix_segment
    )
    B, W, D = h_BWD.shape
    src_h_BWD = jnp.take_along_axis(h_BWD, src_BW[:, :, None], axis=1)
    w_DV = transformer.lm_head_weight(cfg, params).astype(jnp.dtype(cfg.dtype))

    def head(w, h_CD):
        return jnp.einsum("cd,dv->cv", h_CD, w, preferred_element_type=jnp.float32)

    logp, ent = chunked_logprobs_and_entropy(
        head, w_DV, src_h_BWD.reshape(B * W, D), tokens_BW.reshape(B * W), temperature, cfg.logits_chunk
    )
    return logp.reshape(B, W), ent.reshape(B, W)


def unpack(x_BW: jax.Array, unpack_idx_NR: jax.Array) -> jax.Array:
    """Gather packed per-token values into the [N, R] response layout."""
    return jnp.take(x_BW.reshape(-1), unpack_idx_NR, axis=0)
