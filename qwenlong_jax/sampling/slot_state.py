"""The device state of the refill samplers: B rows of G samples, each sample with its own step.

    st = init_slots(cfg, B, S, G, R, keys_1G)          # every sample done (idle)
    st = sample_and_record(strategy, st, logits_BGV, eos_ids, stop_sequences, R)
    st = take_slots(st, idx_b, live_b)                 # a smaller state: rows idx (the drain)

SlotState: B prompt caches [L, B, S, K, H] (continuous.py: one per row of G samples;
sample_refill.py: unused, its rows point into a separate set of prompt caches) and B x G
response caches [L, B, G, R, K, H], one key, step counter, token row and stop bookkeeping per
sample. Samples of different rows sit at different positions: the decode step takes per-sample
RoPE positions, response slots and masks (decode.decode_step with a [B, G] slot).

Every op here is row-independent, so a sample's tokens do not depend on the row it runs in or
on the other rows (what makes the refill samplers token for token the lockstep sampler's).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.parallel import sharding
from qwenlong_jax.sampling import decode, decode_attention, prompt_cache, strategies
from qwenlong_jax.sampling.decode import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, PAD_ID


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SlotState:
    cache: prompt_cache.PromptCache  # k/v [L, B, S, K, H], lens_B, last_logits_BV
    resp_k_LBGRKH: jax.Array
    resp_v_LBGRKH: jax.Array
    keys_BG: jax.Array
    step_BG: jax.Array  # tokens sampled so far by each sample
    tokens_BGR: jax.Array
    logprobs_BGR: jax.Array
    done_BG: jax.Array
    lengths_BG: jax.Array
    finish_BG: jax.Array


@dataclasses.dataclass
class ContinuousOutput:
    tokens_PGR: np.ndarray
    logprobs_PGR: np.ndarray
    lengths_PG: np.ndarray
    finish_PG: np.ndarray
    token_steps: int  # sample-steps computed: (decode steps run) x slots x G, + G per prefill
    decode_steps: int


def cast_params(cfg: ModelConfig, params):
    dt = jnp.dtype(cfg.dtype)
    return jax.tree.map(lambda a: a.astype(dt) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def init_slots(cfg: ModelConfig, B: int, S: int, G: int, R: int, keys_1G) -> SlotState:
    """Empty slots (every sample done); keys_1G: any keys of the run's kind (placeholders)."""
    with sharding.rules(**decode.SAMPLER_RULES):
        return empty_slots(cfg, B, S, G, R, keys_1G)


def empty_slots(cfg, B, S, G, R, keys_1G):
    L, K, H = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim
    dt = jnp.dtype(cfg.dtype)
    cache = prompt_cache.PromptCache(
        sharding.constrain(jnp.zeros((L, B, S, K, H), dt), prompt_cache.CACHE_AXES),
        sharding.constrain(jnp.zeros((L, B, S, K, H), dt), prompt_cache.CACHE_AXES),
        jnp.ones((B,), jnp.int32),
        jnp.zeros((B, cfg.vocab_size), jnp.float32),
    )
    resp = lambda: sharding.constrain(jnp.zeros((L, B, G, R, K, H), dt), decode.RESP_AXES)  # noqa: E731
    return SlotState(
        cache,
        resp(),
        resp(),
        jnp.broadcast_to(keys_1G, (B, G)),
        jnp.zeros((B, G), jnp.int32),
        jnp.full((B, G, R), PAD_ID, jnp.int32),
        jnp.zeros((B, G, R), jnp.float32),
        jnp.ones((B, G), bool),
        jnp.zeros((B, G), jnp.int32),
        jnp.full((B, G), FINISH_LENGTH, jnp.int32),
    )


def sample_and_record(strategy, st: SlotState, logits_BGV, eos_ids, stop_sequences, R: int) -> SlotState:
    """Each live sample draws its token number st.step_BG and records it (decode.advance with
    per-sample positions); done samples are left as they are."""
    B, G, V = logits_BGV.shape
    t_BG = st.step_BG
    tok_N, lp_N = strategies.sample_tokens(
        strategy, logits_BGV.reshape(B * G, V), decode.step_keys(st.keys_BG, t_BG).reshape(B * G)
    )
    live = ~st.done_BG
    t_safe = jnp.minimum(t_BG, R - 1)
    tok = jnp.where(live, tok_N.reshape(B, G), PAD_ID)
    lp = jnp.where(live, lp_N.reshape(B, G), 0.0)
    old_tok = jnp.take_along_axis(st.tokens_BGR, t_safe[..., None], axis=2)[..., 0]
    old_lp = jnp.take_along_axis(st.logprobs_BGR, t_safe[..., None], axis=2)[..., 0]
    tokens = decode_attention.write_slots(st.tokens_BGR, jnp.where(live, tok, old_tok), t_safe, axis=2)
    logprobs = decode_attention.write_slots(st.logprobs_BGR, jnp.where(live, lp, old_lp), t_safe, axis=2)
    is_eos = jnp.isin(tok, jnp.asarray(eos_ids, jnp.int32)) if eos_ids else jnp.zeros_like(live)
    is_stop = jnp.zeros_like(live)
    for seq in stop_sequences:
        m = len(seq)
        idx = t_safe[..., None] - m + 1 + jnp.arange(m)[None, None, :]
        window = jnp.take_along_axis(tokens, jnp.maximum(idx, 0), axis=2)
        is_stop = is_stop | (jnp.all(window == jnp.asarray(seq, jnp.int32)[None, None], axis=-1) & (t_safe + 1 >= m))
    eos_now, stop_now = live & is_eos, live & ~is_eos & is_stop
    finish = jnp.where(eos_now, FINISH_EOS, jnp.where(stop_now, FINISH_STOP, st.finish_BG))
    step = t_BG + live
    done = st.done_BG | eos_now | stop_now | (live & (step >= R))
    return dataclasses.replace(
        st,
        step_BG=step,
        tokens_BGR=tokens,
        logprobs_BGR=logprobs,
        done_BG=done,
        lengths_BG=st.lengths_BG + live,
        finish_BG=finish,
    )


def _batch_axis(path) -> int:
    """The row axis of a SlotState leaf: 1 for the [L, B, ...] caches, else 0."""
    name = path[-1].name if hasattr(path[-1], "name") else ""
    return 1 if name in ("k_LBSKH", "v_LBSKH", "resp_k_LBGRKH", "resp_v_LBGRKH") else 0


@jax.jit
def take_slots(st: SlotState, idx_b, live_b) -> SlotState:
    """Rows idx_b of `st` (a smaller state for the drain, when few rows are still busy); rows
    with live_b False are padding: marked done, so they compute masked steps only."""

    def take(path, a):
        if a is None:
            return None
        return a[:, idx_b] if _batch_axis(path) else a[idx_b]

    with sharding.rules(**decode.SAMPLER_RULES):
        out = jax.tree_util.tree_map_with_path(take, st)
        return dataclasses.replace(out, done_BG=out.done_BG | ~live_b[:, None])
