"""The per-sample refill sampler's rows (sample_refill.py): their state, a prompt's prefill into a
prompt-cache slot, and rows started on a prompt's samples."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.parallel import sharding
from qwenlong_jax.sampling import decode, prompt_cache, slot_state
from qwenlong_jax.sampling.decode import FINISH_LENGTH, PAD_ID


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class RowState:
    cache: prompt_cache.PromptCache  # k/v [L, Q, S, K, H], lens_Q, last_logits_QV
    pidx_Nb: jax.Array  # prompt slot of each block of decode rows
    rows: slot_state.SlotState  # [Nb, W] rows; its own `cache` field is unused (None)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5))
def init_rows(cfg: ModelConfig, Q: int, Nb: int, W: int, S: int, R: int, keys_11) -> RowState:
    """Q empty prompt slots and Nb x W idle decode rows (every row done)."""
    with sharding.rules(**decode.SAMPLER_RULES):
        cache_st = slot_state.empty_slots(cfg, Q, S, 1, 1, keys_11)  # the prompt caches only
        rows = slot_state.empty_slots(cfg, Nb, 1, W, R, keys_11)
        return RowState(cache_st.cache, jnp.zeros((Nb,), jnp.int32), dataclasses.replace(rows, cache=None))


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("prefill_chunk",), donate_argnames=("st",))
def prefill_prompt(cfg: ModelConfig, params, st: RowState, slot, tokens_1S, lens_1, *, prefill_chunk: int) -> RowState:
    """Prefill one prompt into prompt slot `slot` (its cache rows and last logits)."""
    with sharding.rules(**decode.SAMPLER_RULES):
        one = prompt_cache.prefill(cfg, slot_state.cast_params(cfg, params), tokens_1S, lens_1, chunk=prefill_chunk)
        c = st.cache
        put = lambda a, x, ax: lax.dynamic_update_slice_in_dim(a, x.astype(a.dtype), slot, ax)  # noqa: E731
        cache = prompt_cache.PromptCache(
            put(c.k_LBSKH, one.k_LBSKH, 1),
            put(c.v_LBSKH, one.v_LBSKH, 1),
            put(c.lens_B, one.lens_B, 0),
            put(c.last_logits_BV, one.last_logits_BV, 0),
        )
        return dataclasses.replace(st, cache=cache)


@functools.partial(jax.jit, static_argnames=("strategy", "eos_ids", "stop_sequences"), donate_argnames=("st",))
def start_rows(st: RowState, start_Nb, pidx_Nb, keys_NbW, *, strategy, eos_ids, stop_sequences) -> RowState:
    """Blocks with start_Nb take W new samples (prompt slot pidx_Nb, keys keys_NbW) and draw
    their first tokens from the prompt's prefill logits; the other rows do not move."""
    with sharding.rules(**decode.SAMPLER_RULES):
        r = st.rows
        R = r.tokens_BGR.shape[2]
        s1 = jnp.broadcast_to(start_Nb[:, None], r.done_BG.shape)
        pidx = jnp.where(start_Nb, pidx_Nb, st.pidx_Nb)
        fresh = dataclasses.replace(
            r,
            keys_BG=jnp.where(s1, keys_NbW, r.keys_BG),
            step_BG=jnp.where(s1, 0, r.step_BG),
            tokens_BGR=jnp.where(s1[..., None], PAD_ID, r.tokens_BGR),
            logprobs_BGR=jnp.where(s1[..., None], 0.0, r.logprobs_BGR),
            done_BG=~s1,  # only the starting rows are live for this draw
            lengths_BG=jnp.where(s1, 0, r.lengths_BG),
            finish_BG=jnp.where(s1, FINISH_LENGTH, r.finish_BG),
        )
        logits = jnp.broadcast_to(
            st.cache.last_logits_BV[pidx][:, None], r.done_BG.shape + st.cache.last_logits_BV.shape[1:]
        )
        new = slot_state.sample_and_record(strategy, fresh, logits, eos_ids, stop_sequences, R)
        new = dataclasses.replace(new, done_BG=jnp.where(s1, new.done_BG, r.done_BG))
        return dataclasses.replace(st, pidx_Nb=pidx, rows=new)
