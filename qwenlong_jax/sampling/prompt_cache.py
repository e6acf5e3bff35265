"""Chunked prefill: fill each prompt's KV cache ONCE, C tokens at a time.

    cache = prefill(cfg, params, prompt_tokens_BS, prompt_lens_B, chunk=C)
    cache.k_LBSKH, cache.v_LBSKH   # one prompt cache per prompt (never per sample)
    cache.last_logits_BV           # logits of the token after each prompt

Layout: prompts are RIGHT-padded, token i of a prompt sits at cache slot i and RoPE position i
(its true position), so a response continues at position prompt_len. With right padding a valid
query never sees a padding key (padding comes after it), so causality is the only mask needed;
pad queries compute garbage that nothing reads.

A long prompt never materialises a [S, S] score matrix: chunk c (queries [cC, cC+C)) attends to
its own chunk causally and to the previous chunks' cache block by block with an online softmax
(a plain-jnp flash attention whose trip count is c, so no work is spent on future blocks). The
largest score tensor is [B, K, N/K, C, C]. Each chunk's new k/v are returned from the layer scan
and written into the [L, B, S, K, H] cache with one dynamic_update_slice per chunk (in place).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from qwenlong_jax.models import transformer
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.parallel import sharding

CACHE_AXES = ("layers", "batch", None, "kv_heads", None)  # [L, B, S, K, H]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class PromptCache:
    k_LBSKH: jax.Array
    v_LBSKH: jax.Array
    lens_B: jax.Array  # int32 valid prompt tokens
    last_logits_BV: jax.Array  # float32 logits predicting the first response token


def _scores(q_BCKQH, k_BSKH, scale):
    return jnp.einsum("bckqh,bskh->bkqcs", q_BCKQH, k_BSKH, preferred_element_type=jnp.float32) * scale


def _pv(p_BKQCS, v_BSKH):
    return jnp.einsum("bkqcs,bskh->bkqch", p_BKQCS.astype(v_BSKH.dtype), v_BSKH, preferred_element_type=jnp.float32)


def chunk_attention(q_BCNH, k_BCKH, v_BCKH, cache_k_BSKH, cache_v_BSKH, chunk_index):
    """Causal attention of one chunk over [cache[:chunk_index*C] | the chunk itself]."""
    B, C, N, H = q_BCNH.shape
    K = k_BCKH.shape[2]
    scale = H**-0.5
    q = q_BCNH.reshape(B, C, K, N // K, H)
    causal_CC = jnp.arange(C)[None, :] <= jnp.arange(C)[:, None]
    s = jnp.where(causal_CC, _scores(q, k_BCKH, scale), -jnp.inf)
    m = jnp.max(s, axis=-1)  # the diagonal is always visible: finite
    p = jnp.exp(s - m[..., None])
    init = (_pv(p, v_BCKH), m, jnp.sum(p, axis=-1))

    def block(j, carry):  # a previous chunk: fully visible
        acc, m, l = carry
        k_blk = lax.dynamic_slice_in_dim(cache_k_BSKH, j * C, C, axis=1)
        v_blk = lax.dynamic_slice_in_dim(cache_v_BSKH, j * C, C, axis=1)
        s = _scores(q, k_blk, scale)
        m_new = jnp.maximum(m, jnp.max(s, axis=-1))
        p = jnp.exp(s - m_new[..., None])
        alpha = jnp.exp(m - m_new)
        return alpha[..., None] * acc + _pv(p, v_blk), m_new, alpha * l + jnp.sum(p, axis=-1)

    acc, _, l = lax.fori_loop(0, chunk_index, block, init)
    out_BKQCH = acc / l[..., None]
    return out_BKQCH.transpose(0, 3, 1, 2, 4).reshape(B, C, N, H).astype(q_BCNH.dtype)


def check_chunk(S: int, chunk: int) -> int:
    """The chunk actually used: `chunk`, or S when the prompt fits in one chunk."""
    if chunk <= 0:
        raise ValueError(f"prefill_chunk must be > 0, got {chunk}")
    if chunk >= S:
        return S
    if S % chunk:
        raise ValueError(
            f"padded prompt length S={S} must be a multiple of prefill_chunk={chunk} (pad with sampling.bucket_length)"
        )
    return chunk


def own_length(n: int, S: int, chunk: int) -> int:
    """The padded length a lone n-token prompt of a batch padded to S needs: its own chunks
    only (the chunks past its end change nothing of it: attention is causal), the same C-token
    chunks as at S, so its cache and logits are computed exactly as in the batch."""
    C = check_chunk(S, chunk)
    return min(S, -(-n // C) * C)


def prefill(
    cfg: ModelConfig, params: dict, prompt_tokens_BS: jax.Array, prompt_lens_B: jax.Array, *, chunk: int
) -> PromptCache:
    """Runs the prompts through the model chunk by chunk, filling one KV cache per prompt."""
    B, S = prompt_tokens_BS.shape
    C = check_chunk(S, chunk)
    L, K, H = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim
    dt = jnp.dtype(cfg.dtype)
    zeros = jnp.zeros((L, B, S, K, H), dt)
    cache_k, cache_v = sharding.constrain(zeros, CACHE_AXES), sharding.constrain(zeros, CACHE_AXES)
    lens_B = prompt_lens_B.astype(jnp.int32)
    last_B = lens_B - 1

    def one_chunk(c, carry):
        cache_k, cache_v, last_h_BD = carry
        start = c * C
        tokens_BC = lax.dynamic_slice_in_dim(prompt_tokens_BS, start, C, axis=1)
        positions_BC = jnp.broadcast_to(start + jnp.arange(C, dtype=jnp.int32)[None], (B, C))

        def attend(_idx, q, k, v, layer_cache):
            ck, cv = layer_cache
            return chunk_attention(q, k, v, ck, cv, c), (k, v)

        x = transformer.embed(cfg, params, tokens_BC, gather_table=False)
        x, (k_LBCKH, v_LBCKH) = transformer.decoder_stack(
            cfg, params["layers"], x, positions_BC, attend, (cache_k, cache_v)
        )
        cache_k = lax.dynamic_update_slice_in_dim(cache_k, k_LBCKH.astype(dt), start, axis=2)
        cache_v = lax.dynamic_update_slice_in_dim(cache_v, v_LBCKH.astype(dt), start, axis=2)
        # Keep the hidden state of each prompt's last token (logits come once, after the loop).
        in_chunk_B = (last_B >= start) & (last_B < start + C)
        idx_B = jnp.clip(last_B - start, 0, C - 1)
        h_BD = jnp.take_along_axis(x, idx_B[:, None, None], axis=1)[:, 0]
        last_h_BD = jnp.where(in_chunk_B[:, None], h_BD, last_h_BD)
        return (sharding.constrain(cache_k, CACHE_AXES), sharding.constrain(cache_v, CACHE_AXES), last_h_BD)

    init = (cache_k, cache_v, jnp.zeros((B, cfg.hidden_size), dt))
    cache_k, cache_v, last_h_BD = lax.fori_loop(0, S // C, one_chunk, init)
    h = transformer.final_hidden(cfg, params, last_h_BD[:, None])
    logits_BV = transformer.logits_from_hidden(cfg, params, h)[:, 0]
    return PromptCache(cache_k, cache_v, lens_B, logits_BV)
