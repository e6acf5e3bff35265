"""Continuous batching: a fixed set of prompt slots; a prompt's slot is refilled as soon as its G
samples are done, instead of every sample of a call waiting for the longest one.

    out = sample_continuous(cfg, params, prompt_tokens_PS, prompt_lens_P, keys_PG,
                            slots=B, max_new_tokens=R, strategy=..., eos_ids=..., chunk=32)
    out.tokens_PGR, out.logprobs_PGR, out.lengths_PG, out.finish_PG   # as sample_groups' B = P
    out.token_steps                      # sample-steps computed (the utilization denominator)

Device state: B prompt caches [L, B, S, K, H] and B x G response caches [L, B, G, R, K, H],
one step counter per SAMPLE (samples of different prompts sit at different positions; the
decode step takes per-sample RoPE positions, response slots and masks: decode.decode_step with
a [B, G] slot). The host loop alternates `decode_chunk` (`chunk` steps, or fewer when every
sample is done) with harvesting: a slot whose G samples are all done hands its rows to the
output and takes the next prompt (`prefill_slot`: one prompt's chunked prefill written into the
slot's cache rows, its G first tokens sampled). A finished sample of a slot still running
computes masked steps until its siblings finish (they share the prompt cache).

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

from qwenlong_jax.parallel import sharding
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.sampling import decode, prompt_cache, strategies
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
    return jax.tree.map(lambda a: a.astype(dt) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                        params)


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
        jnp.ones((B,), jnp.int32), jnp.zeros((B, cfg.vocab_size), jnp.float32))
    resp = lambda: sharding.constrain(jnp.zeros((L, B, G, R, K, H), dt), decode.RESP_AXES)  # noqa: E731
    return SlotState(cache, resp(), resp(), jnp.broadcast_to(keys_1G, (B, G)), jnp.zeros((B, G), jnp.int32), jnp.full((B, G, R), PAD_ID, jnp.int32),
                     jnp.zeros((B, G, R), jnp.float32), jnp.ones((B, G), bool),
                     jnp.zeros((B, G), jnp.int32), jnp.full((B, G), FINISH_LENGTH, jnp.int32))


def sample_and_record(strategy, st: SlotState, logits_BGV, eos_ids, stop_sequences,
                       R: int) -> SlotState:
    """Each live sample draws its token number st.step_BG and records it (decode.advance with
    per-sample positions); done samples are left as they are."""
    B, G, V = logits_BGV.shape
    t_BG = st.step_BG
    tok_N, lp_N = strategies.sample_tokens(strategy, logits_BGV.reshape(B * G, V),
                                           decode.step_keys(st.keys_BG, t_BG).reshape(B * G))
    live = ~st.done_BG
    t_safe = jnp.minimum(t_BG, R - 1)
    tok = jnp.where(live, tok_N.reshape(B, G), PAD_ID)
    lp = jnp.where(live, lp_N.reshape(B, G), 0.0)
    old_tok = jnp.take_along_axis(st.tokens_BGR, t_safe[..., None], axis=2)[..., 0]
    old_lp = jnp.take_along_axis(st.logprobs_BGR, t_safe[..., None], axis=2)[..., 0]
    tokens = decode.write_slots(st.tokens_BGR, jnp.where(live, tok, old_tok), t_safe, axis=2)
    logprobs = decode.write_slots(st.logprobs_BGR, jnp.where(live, lp, old_lp), t_safe, axis=2)
    is_eos = (jnp.isin(tok, jnp.asarray(eos_ids, jnp.int32)) if eos_ids
              else jnp.zeros_like(live))
    is_stop = jnp.zeros_like(live)
    for seq in stop_sequences:
        m = len(seq)
        idx = t_safe[..., None] - m + 1 + jnp.arange(m)[None, None, :]
        window = jnp.take_along_axis(tokens, jnp.maximum(idx, 0), axis=2)
        is_stop = is_stop | (jnp.all(window == jnp.asarray(seq, jnp.int32)[None, None], axis=-1)
                             & (t_safe + 1 >= m))
    eos_now, stop_now = live & is_eos, live & ~is_eos & is_stop
    finish = jnp.where(eos_now, FINISH_EOS, jnp.where(stop_now, FINISH_STOP, st.finish_BG))
    step = t_BG + live
    done = st.done_BG | eos_now | stop_now | (live & (step >= R))
    return dataclasses.replace(st, step_BG=step, tokens_BGR=tokens, logprobs_BGR=logprobs,
                               done_BG=done, lengths_BG=st.lengths_BG + live, finish_BG=finish)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=(
    "strategy", "eos_ids", "stop_sequences", "prefill_chunk"), donate_argnames=("st",))
def prefill_slot(cfg: ModelConfig, params, st: SlotState, slot, tokens_1S, lens_1, keys_1G, *,
                 strategy, eos_ids, stop_sequences, prefill_chunk: int) -> SlotState:
    """Prefill one prompt into prompt slot `slot` and sample its G first tokens."""
    with sharding.rules(**decode.SAMPLER_RULES):
        params = cast_params(cfg, params)
        one = prompt_cache.prefill(cfg, params, tokens_1S, lens_1, chunk=prefill_chunk)
        c = st.cache
        put = lambda a, x, ax: lax.dynamic_update_slice_in_dim(a, x.astype(a.dtype), slot, ax)  # noqa: E731
        cache = prompt_cache.PromptCache(put(c.k_LBSKH, one.k_LBSKH, 1), put(c.v_LBSKH, one.v_LBSKH, 1),
                                         put(c.lens_B, one.lens_B, 0),
                                         put(c.last_logits_BV, one.last_logits_BV, 0))
        G, R = st.tokens_BGR.shape[1:]
        row = lambda a, x: lax.dynamic_update_slice_in_dim(a, x[None].astype(a.dtype), slot, 0)  # noqa: E731
        st = dataclasses.replace(
            st, cache=cache, keys_BG=row(st.keys_BG, keys_1G[0]),
            step_BG=row(st.step_BG, jnp.zeros((G,), jnp.int32)),
            tokens_BGR=row(st.tokens_BGR, jnp.full((G, R), PAD_ID, jnp.int32)),
            logprobs_BGR=row(st.logprobs_BGR, jnp.zeros((G, R), jnp.float32)),
            done_BG=row(st.done_BG, jnp.zeros((G,), bool)),
            lengths_BG=row(st.lengths_BG, jnp.zeros((G,), jnp.int32)),
            finish_BG=row(st.finish_BG, jnp.full((G,), FINISH_LENGTH, jnp.int32)))
        # the first token of every sample of this slot from the prefill logits (others: done
        # rows are untouched; live rows of other slots must not move, so only this slot is live)
        B = st.done_BG.shape[0]
        others = jnp.arange(B)[:, None] != slot
        logits = jnp.broadcast_to(cache.last_logits_BV[:, None], (B, G, cfg.vocab_size))
        frozen = dataclasses.replace(st, done_BG=st.done_BG | others)
        new = sample_and_record(strategy, frozen, logits, eos_ids, stop_sequences, R)
        return dataclasses.replace(new, done_BG=jnp.where(others, st.done_BG, new.done_BG))


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=(
    "strategy", "eos_ids", "stop_sequences", "steps", "decode_impl"), donate_argnames=("st",))
def decode_chunk(cfg: ModelConfig, params, st: SlotState, *, strategy, eos_ids, stop_sequences,
                 steps: int, decode_impl: decode.DecodeImpl = "xla"):
    """Up to `steps` decode steps of every live sample (stops early when all are done).
    Returns (state, steps run)."""
    with sharding.rules(**decode.SAMPLER_RULES):
        return decode_loop(cfg, cast_params(cfg, params), st.cache, st, strategy=strategy,
                           eos_ids=eos_ids, stop_sequences=stop_sequences, steps=steps,
                           decode_impl=decode_impl)


def decode_loop(cfg: ModelConfig, params, cache, st: SlotState, *, strategy, eos_ids,
                stop_sequences, steps: int, decode_impl: decode.DecodeImpl):
    """The decode loop both refill samplers trace (inside their jit and sharding rules): up to
    `steps` steps of every live sample of `st` against the prompt `cache` (one entry per row of
    st), stopping early when all are done. Returns (state, steps run)."""
    R = st.tokens_BGR.shape[2]

    def cond(c):
        s, n = c
        return (n < steps) & ~jnp.all(s.done_BG)

    def body(c):
        s, n = c
        slot_BG = jnp.maximum(s.step_BG - 1, 0)  # the newest token's response slot
        prev_BG = jnp.take_along_axis(s.tokens_BGR, slot_BG[..., None], axis=2)[..., 0]
        logits, k_LBGKH, v_LBGKH = decode.decode_step(
            cfg, params, cache, s.resp_k_LBGRKH, s.resp_v_LBGRKH, prev_BG, slot_BG, decode_impl)
        s = dataclasses.replace(
            s, resp_k_LBGRKH=decode.write_slots(s.resp_k_LBGRKH, k_LBGKH, slot_BG, axis=3),
            resp_v_LBGRKH=decode.write_slots(s.resp_v_LBGRKH, v_LBGKH, slot_BG, axis=3))
        return sample_and_record(strategy, s, logits, eos_ids, stop_sequences, R), n + 1

    return lax.while_loop(cond, body, (st, jnp.zeros((), jnp.int32)))


def sample_continuous(cfg: ModelConfig, params, prompt_tokens_PS, prompt_lens_P, keys_PG, *,
                      slots: int, max_new_tokens: int,
                      strategy: strategies.AnyStrategy = strategies.Greedy(),
                      eos_ids: tuple[int, ...] = (), stop_sequences: tuple[tuple[int, ...], ...] = (),
                      prefill_chunk: int = 512, chunk: int = 32,
                      decode_impl: decode.DecodeImpl = "xla") -> ContinuousOutput:
    """P prompts through `slots` prompt slots; the same samples as sample_groups on all P."""
    tokens_PS = np.asarray(prompt_tokens_PS)
    lens_P = np.asarray(prompt_lens_P)
    P, S = tokens_PS.shape
    G, R = keys_PG.shape[1], max_new_tokens
    if chunk <= 0 or slots <= 0:
        raise ValueError(f"slots and chunk must be > 0, got slots={slots}, chunk={chunk}")
    B = min(slots, P)
    static = dict(strategy=strategy, eos_ids=tuple(eos_ids),
                  stop_sequences=tuple(tuple(s) for s in stop_sequences))
    st = init_slots(cfg, B, S, G, R, keys_PG[:1])
    out_tok = np.full((P, G, R), PAD_ID, np.int32)
    out_lp = np.zeros((P, G, R), np.float32)
    out_len = np.zeros((P, G), np.int32)
    out_fin = np.zeros((P, G), np.int32)
    owner = [-1] * B  # prompt index held by each slot
    nxt, token_steps, decode_steps = 0, 0, 0
    for b in range(B):
        st = prefill_slot(cfg, params, st, b, tokens_PS[nxt:nxt + 1], lens_P[nxt:nxt + 1],
                          keys_PG[nxt:nxt + 1], prefill_chunk=prefill_chunk, **static)
        owner[b], nxt, token_steps = nxt, nxt + 1, token_steps + G
    while any(o >= 0 for o in owner):
        done_BG = np.asarray(st.done_BG)
        for b in range(B):
            if owner[b] < 0 or not done_BG[b].all():
                continue
            p = owner[b]
            out_tok[p], out_lp[p] = np.asarray(st.tokens_BGR[b]), np.asarray(st.logprobs_BGR[b])
            out_len[p], out_fin[p] = np.asarray(st.lengths_BG[b]), np.asarray(st.finish_BG[b])
            owner[b] = -1
            if nxt < P:
                st = prefill_slot(cfg, params, st, b, tokens_PS[nxt:nxt + 1],
                                  lens_P[nxt:nxt + 1], keys_PG[nxt:nxt + 1],
                                  prefill_chunk=prefill_chunk, **static)
                owner[b], nxt, token_steps = nxt, nxt + 1, token_steps + G
        if all(o < 0 for o in owner):
            break
        st, n = decode_chunk(cfg, params, st, steps=chunk, decode_impl=decode_impl, **static)
        n = int(n)
        decode_steps += n
        token_steps += n * B * G
    return ContinuousOutput(out_tok, out_lp, out_len, out_fin, token_steps, decode_steps)
