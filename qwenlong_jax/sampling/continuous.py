"""Continuous batching: a fixed set of prompt slots; a prompt's slot is refilled as soon as its G
samples are done, instead of every sample of a call waiting for the longest one.

    out = sample_continuous(cfg, params, prompt_tokens_PS, prompt_lens_P, keys_PG,
                            slots=B, max_new_tokens=R, strategy=..., eos_ids=..., chunk=16)
    out.tokens_PGR, out.logprobs_PGR, out.lengths_PG, out.finish_PG   # as sample_groups' B = P
    out.token_steps                      # sample-steps computed (the utilization denominator)

Device state (slot_state.SlotState): B prompt caches and B x G response caches, one step
counter per SAMPLE. The host loop alternates `decode_chunk` with harvesting: a slot whose G
samples are all done hands its rows to the output and takes the next prompt (`prefill_slots`:
the prompt's chunked prefill written into the slot's cache rows, its G first tokens sampled).
A prompt is prefilled alone, over its own prefill chunks only (prompt_cache.own_length), where
a lockstep call prefills every prompt to the call's padded length. A chunk runs up to `chunk`
steps and stops as soon as a slot becomes free (while prompts wait, or in the drain), so a
refill never waits for the end of a chunk. A finished sample of a slot still running computes
masked steps until its siblings finish (they share the prompt cache).

The drain: once every prompt is in a slot, the busy slots are packed into a smaller state
(slot_state.take_slots, the next power of two >= the busy slots) whenever that halves it or
better, so the last long groups do not step B x G rows.

Token for token the same samples as `sampler.sample_groups` (tested): sample (p, g) draws token
t from fold_in(keys_PG[p, g], t) whatever slot or step it runs in, and every op of a step is
row-independent.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.parallel import sharding
from qwenlong_jax.sampling import decode, prompt_cache, strategies
from qwenlong_jax.sampling.decode import FINISH_LENGTH, PAD_ID
from qwenlong_jax.sampling.refill_loop import decode_loop, drain_size
from qwenlong_jax.sampling.slot_state import (
    ContinuousOutput,
    SlotState,
    cast_params,
    init_slots,
    sample_and_record,
    take_slots,
)


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("strategy", "eos_ids", "stop_sequences", "prefill_chunk"),
    donate_argnames=("st",),
)
def prefill_slots(
    cfg: ModelConfig,
    params,
    st: SlotState,
    first,
    tokens_nS,
    lens_n,
    keys_nG,
    *,
    strategy,
    eos_ids,
    stop_sequences,
    prefill_chunk: int,
) -> SlotState:
    """Prefill n prompts into slots [first, first + n) and sample their G first tokens."""
    with sharding.rules(**decode.SAMPLER_RULES):
        params = cast_params(cfg, params)
        new = prompt_cache.prefill(cfg, params, tokens_nS, lens_n, chunk=prefill_chunk)
        c = st.cache
        put = lambda a, x, ax: lax.dynamic_update_slice_in_dim(a, x.astype(a.dtype), first, ax)  # noqa: E731
        cache = prompt_cache.PromptCache(
            put(c.k_LBSKH, new.k_LBSKH, 1),
            put(c.v_LBSKH, new.v_LBSKH, 1),
            put(c.lens_B, new.lens_B, 0),
            put(c.last_logits_BV, new.last_logits_BV, 0),
        )
        n = tokens_nS.shape[0]
        G, R = st.tokens_BGR.shape[1:]
        st = dataclasses.replace(
            st,
            cache=cache,
            keys_BG=put(st.keys_BG, keys_nG, 0),
            step_BG=put(st.step_BG, jnp.zeros((n, G), jnp.int32), 0),
            tokens_BGR=put(st.tokens_BGR, jnp.full((n, G, R), PAD_ID, jnp.int32), 0),
            logprobs_BGR=put(st.logprobs_BGR, jnp.zeros((n, G, R), jnp.float32), 0),
            done_BG=put(st.done_BG, jnp.zeros((n, G), bool), 0),
            lengths_BG=put(st.lengths_BG, jnp.zeros((n, G), jnp.int32), 0),
            finish_BG=put(st.finish_BG, jnp.full((n, G), FINISH_LENGTH, jnp.int32), 0),
        )
        # the first token of every sample of these slots from the prefill logits (others: done
        # rows are untouched; live rows of other slots must not move, so only these are live)
        B = st.done_BG.shape[0]
        rows = jnp.arange(B)[:, None]
        others = (rows < first) | (rows >= first + n)
        logits = jnp.broadcast_to(cache.last_logits_BV[:, None], (B, G, cfg.vocab_size))
        frozen = dataclasses.replace(st, done_BG=st.done_BG | others)
        new_st = sample_and_record(strategy, frozen, logits, eos_ids, stop_sequences, R)
        return dataclasses.replace(new_st, done_BG=jnp.where(others, st.done_BG, new_st.done_BG))


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("strategy", "eos_ids", "stop_sequences", "steps", "decode_impl"),
    donate_argnames=("st",),
)
def decode_chunk(
    cfg: ModelConfig,
    params,
    st: SlotState,
    stop_on_free=False,
    *,
    strategy,
    eos_ids,
    stop_sequences,
    steps: int,
    decode_impl: decode.DecodeImpl = "xla",
):
    """Up to `steps` decode steps of every live sample (stops early when all are done, or, with
    stop_on_free, when a slot busy at the start has all its samples done).
    Returns (state, steps run)."""
    with sharding.rules(**decode.SAMPLER_RULES):
        return decode_loop(
            cfg,
            cast_params(cfg, params),
            st.cache,
            st,
            stop_on_free,
            strategy=strategy,
            eos_ids=eos_ids,
            stop_sequences=stop_sequences,
            steps=steps,
            decode_impl=decode_impl,
        )


def sample_continuous(
    cfg: ModelConfig,
    params,
    prompt_tokens_PS,
    prompt_lens_P,
    keys_PG,
    *,
    slots: int,
    max_new_tokens: int,
    strategy: strategies.AnyStrategy = strategies.GREEDY,
    eos_ids: tuple[int, ...] = (),
    stop_sequences: tuple[tuple[int, ...], ...] = (),
    prefill_chunk: int = 512,
    chunk: int = 16,
    drain: bool = True,
    decode_impl: decode.DecodeImpl = "xla",
) -> ContinuousOutput:
    """P prompts through `slots` prompt slots; the same samples as sample_groups on all P."""
    tokens_PS = np.asarray(prompt_tokens_PS)
    lens_P = np.asarray(prompt_lens_P)
    P, S = tokens_PS.shape
    G, R = keys_PG.shape[1], max_new_tokens
    if chunk <= 0 or slots <= 0:
        raise ValueError(f"slots and chunk must be > 0, got slots={slots}, chunk={chunk}")
    B = min(slots, P)
    static = dict(strategy=strategy, eos_ids=tuple(eos_ids), stop_sequences=tuple(tuple(s) for s in stop_sequences))
    st = init_slots(cfg, B, S, G, R, keys_PG[:1])
    out_tok = np.full((P, G, R), PAD_ID, np.int32)
    out_lp = np.zeros((P, G, R), np.float32)
    out_len = np.zeros((P, G), np.int32)
    out_fin = np.zeros((P, G), np.int32)

    def prefill(st, b, p):  # prompt p into slot b, at its own chunks (prompt_cache.own_length)
        n = prompt_cache.own_length(int(lens_P[p]), S, prefill_chunk)
        return prefill_slots(
            cfg,
            params,
            st,
            b,
            tokens_PS[p : p + 1, :n],
            lens_P[p : p + 1],
            keys_PG[p : p + 1],
            prefill_chunk=prefill_chunk,
            **static,
        )

    for b in range(B):
        st = prefill(st, b, b)
    owner = list(range(B))  # prompt index held by each slot (-1: free)
    nxt, token_steps, decode_steps = B, B * G, 0
    while True:
        done_B = np.asarray(np.asarray(sharding.to_host(st.done_BG)).all(axis=1))
        finished = [b for b in range(len(owner)) if owner[b] >= 0 and done_B[b]]
        if finished:
            h = sharding.to_host((st.tokens_BGR, st.logprobs_BGR, st.lengths_BG, st.finish_BG))
            for b in finished:
                p = owner[b]
                out_tok[p], out_lp[p], out_len[p], out_fin[p] = (a[b] for a in h)
                owner[b] = -1
                if nxt < P:
                    st = prefill(st, b, nxt)
                    owner[b], nxt, token_steps = nxt, nxt + 1, token_steps + G
        busy = [b for b in range(len(owner)) if owner[b] >= 0]
        if not busy:
            break
        if drain and nxt == P and drain_size(len(busy), len(owner)) <= len(owner) // 2:
            n = drain_size(len(busy), len(owner))
            idx = busy + [busy[0]] * (n - len(busy))
            st = take_slots(st, jnp.asarray(idx, jnp.int32), jnp.asarray(np.arange(n) < len(busy)))
            owner = [owner[b] for b in busy] + [-1] * (n - len(busy))
        # a chunk ends at a freed slot while a prompt waits for it or the drain could shrink
        stop_on_free = nxt < P or (drain and len(owner) > 1)
        st, n_run = decode_chunk(cfg, params, st, stop_on_free, steps=chunk, decode_impl=decode_impl, **static)
        n_run = int(n_run)
        decode_steps += n_run
        token_steps += n_run * len(owner) * G
    return ContinuousOutput(out_tok, out_lp, out_len, out_fin, token_steps, decode_steps)
