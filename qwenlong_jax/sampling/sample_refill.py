"""Sample-level continuous batching: a finished sample's decode row takes the next sample, of
whichever prompt is next, instead of waiting for the slowest sample of its group.

    out = sample_refill(cfg, params, prompt_tokens_PS, prompt_lens_P, keys_PG,
                        rows=D, prompt_slots=Q, max_new_tokens=R, strategy=..., chunk=4)
    out.tokens_PGR, out.logprobs_PGR, out.lengths_PG, out.finish_PG   # as sample_groups' B = P
    out.token_steps, out.decode_steps          # (continuous.ContinuousOutput)

Decode rows are decoupled from prompt caches. Device state: Q prompt caches [L, Q, S, K, H]
(with each prompt's last logits) and D decode rows, each with a prompt-slot index pidx_D, its
own response cache row [L, D, 1, R, K, H], key, step counter, tokens and stop bookkeeping (the
[B, G] arrays of continuous.SlotState with B = D, G = 1). A decode chunk gathers each row's
prompt cache once (`cache.k[:, pidx_D]`: [L, D, S, K, H]) and runs decode.decode_step on the D
rows with per-row positions and response slots.

The host loop alternates `decode_rows` (`chunk` steps, or fewer when every row is done) with
harvesting and refilling, samples taken in (prompt, sample) order:
- a done row hands its sample to the output; a prompt slot whose G samples are all harvested
  is free;
- a free row takes the next sample; if its prompt is not cached yet, the prompt is prefilled
  into a free prompt slot (`prefill_prompt`); with no free prompt slot the row waits;
- the rows that took a sample draw their first token from their prompt's prefill logits
  (`start_rows`, one call for all of them).

Token for token the same samples as `sampler.sample_groups` (tested): sample (p, g) draws token
t from fold_in(keys_PG[p, g], t) whatever row, prompt slot or step it runs in, and every op of
a step is row-independent.

Cost: a decode step reads each row's prompt cache once per row (G reads of a prompt shared by G
live samples, where the lockstep and group-refill samplers read it once per prompt), and each
chunk copies the D rows' prompt caches. At short
prompts (the default run) that is cheap; at long prompts the prompt-cache reads dominate a step
(docs/rollout_performance.md) and sharing them matters more than row occupancy.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from qwenlong_jax import sharding
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.sampling import continuous, decode, prompt_cache, strategies
from qwenlong_jax.sampling.decode import FINISH_LENGTH, PAD_ID


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class RowState:
    cache: prompt_cache.PromptCache  # k/v [L, Q, S, K, H], lens_Q, last_logits_QV
    pidx_D: jax.Array  # prompt slot of each decode row
    rows: continuous.SlotState  # B = D rows, G = 1; its own `cache` field is unused (None)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def init_rows(cfg: ModelConfig, Q: int, D: int, S: int, R: int, keys_11) -> RowState:
    """Q empty prompt slots and D idle decode rows (every row done)."""
    with sharding.rules(**decode.SAMPLER_RULES):
        cache_st = continuous._init_slots(cfg, Q, S, 1, 1, keys_11)  # the prompt caches only
        rows = continuous._init_slots(cfg, 1, 1, D, R, keys_11)
        L, K, H = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim
        resp = lambda: sharding.constrain(jnp.zeros((L, D, 1, R, K, H), jnp.dtype(cfg.dtype)),  # noqa: E731
                                          decode.RESP_AXES)
        one = lambda a: a.reshape((D, 1) + a.shape[2:])  # noqa: E731  [1, D, ...] -> [D, 1, ...]
        rows = continuous.SlotState(
            None, resp(), resp(), one(rows.keys_BG), one(rows.step_BG), one(rows.tokens_BGR),
            one(rows.logprobs_BGR), one(rows.done_BG), one(rows.lengths_BG), one(rows.finish_BG))
        return RowState(cache_st.cache, jnp.zeros((D,), jnp.int32), rows)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("prefill_chunk",),
                   donate_argnames=("st",))
def prefill_prompt(cfg: ModelConfig, params, st: RowState, slot, tokens_1S, lens_1, *,
                   prefill_chunk: int) -> RowState:
    """Prefill one prompt into prompt slot `slot` (its cache rows and last logits)."""
    with sharding.rules(**decode.SAMPLER_RULES):
        one = prompt_cache.prefill(cfg, continuous._cast(cfg, params), tokens_1S, lens_1,
                                   chunk=prefill_chunk)
        c = st.cache
        put = lambda a, x, ax: lax.dynamic_update_slice_in_dim(a, x.astype(a.dtype), slot, ax)  # noqa: E731
        cache = prompt_cache.PromptCache(put(c.k_LBSKH, one.k_LBSKH, 1), put(c.v_LBSKH, one.v_LBSKH, 1),
                                         put(c.lens_B, one.lens_B, 0),
                                         put(c.last_logits_BV, one.last_logits_BV, 0))
        return dataclasses.replace(st, cache=cache)


@functools.partial(jax.jit, static_argnames=("strategy", "eos_ids", "stop_sequences"),
                   donate_argnames=("st",))
def start_rows(st: RowState, start_D, pidx_D, keys_D, *, strategy, eos_ids,
               stop_sequences) -> RowState:
    """Rows with start_D take a new sample (prompt slot pidx_D, key keys_D) and draw its first
    token from the prompt's prefill logits; the other rows do not move."""
    with sharding.rules(**decode.SAMPLER_RULES):
        r = st.rows
        R = r.tokens_BGR.shape[2]
        s1 = start_D[:, None]
        pidx = jnp.where(start_D, pidx_D, st.pidx_D)
        fresh = dataclasses.replace(
            r, keys_BG=jnp.where(s1, keys_D[:, None], r.keys_BG),
            step_BG=jnp.where(s1, 0, r.step_BG),
            tokens_BGR=jnp.where(s1[..., None], PAD_ID, r.tokens_BGR),
            logprobs_BGR=jnp.where(s1[..., None], 0.0, r.logprobs_BGR),
            done_BG=~s1,  # only the starting rows are live for this draw
            lengths_BG=jnp.where(s1, 0, r.lengths_BG),
            finish_BG=jnp.where(s1, FINISH_LENGTH, r.finish_BG))
        logits = st.cache.last_logits_BV[pidx][:, None]  # [D, 1, V]
        new = continuous._sample_and_record(strategy, fresh, logits, eos_ids, stop_sequences, R)
        new = dataclasses.replace(new, done_BG=jnp.where(s1, new.done_BG, r.done_BG))
        return dataclasses.replace(st, pidx_D=pidx, rows=new)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=(
    "strategy", "eos_ids", "stop_sequences", "steps", "decode_impl"), donate_argnames=("st",))
def decode_rows(cfg: ModelConfig, params, st: RowState, *, strategy, eos_ids, stop_sequences,
                steps: int, decode_impl: decode.DecodeImpl = "xla"):
    """Up to `steps` decode steps of every live row (stops early when all are done).
    Returns (state, steps run)."""
    R = st.rows.tokens_BGR.shape[2]
    with sharding.rules(**decode.SAMPLER_RULES):
        params = continuous._cast(cfg, params)
        c = st.cache
        # each row's prompt cache, gathered once per chunk (pidx_D is fixed within a chunk)
        rows_cache = prompt_cache.PromptCache(
            sharding.constrain(c.k_LBSKH[:, st.pidx_D], prompt_cache.CACHE_AXES),
            sharding.constrain(c.v_LBSKH[:, st.pidx_D], prompt_cache.CACHE_AXES),
            c.lens_B[st.pidx_D], c.last_logits_BV[st.pidx_D])

        def cond(carry):
            s, n = carry
            return (n < steps) & ~jnp.all(s.done_BG)

        def body(carry):
            s, n = carry
            slot_D1 = jnp.maximum(s.step_BG - 1, 0)  # the newest token's response slot
            prev_D1 = jnp.take_along_axis(s.tokens_BGR, slot_D1[..., None], axis=2)[..., 0]
            logits, k_LD1KH, v_LD1KH = decode.decode_step(
                cfg, params, rows_cache, s.resp_k_LBGRKH, s.resp_v_LBGRKH, prev_D1, slot_D1,
                decode_impl)
            s = dataclasses.replace(
                s, resp_k_LBGRKH=decode.write_slots(s.resp_k_LBGRKH, k_LD1KH, slot_D1, axis=3),
                resp_v_LBGRKH=decode.write_slots(s.resp_v_LBGRKH, v_LD1KH, slot_D1, axis=3))
            return continuous._sample_and_record(strategy, s, logits, eos_ids, stop_sequences,
                                                 R), n + 1

        rows, n = lax.while_loop(cond, body, (st.rows, jnp.zeros((), jnp.int32)))
        return dataclasses.replace(st, rows=rows), n


def sample_refill(cfg: ModelConfig, params, prompt_tokens_PS, prompt_lens_P, keys_PG, *,
                  rows: int, prompt_slots: int, max_new_tokens: int,
                  strategy: strategies.AnyStrategy = strategies.Greedy(),
                  eos_ids: tuple[int, ...] = (), stop_sequences: tuple[tuple[int, ...], ...] = (),
                  prefill_chunk: int = 512, chunk: int = 4,
                  decode_impl: decode.DecodeImpl = "xla") -> continuous.ContinuousOutput:
    """P prompts x G samples through `rows` decode rows and `prompt_slots` prompt caches; the
    same samples as sample_groups on all P."""
    tokens_PS = np.asarray(prompt_tokens_PS)
    lens_P = np.asarray(prompt_lens_P)
    P, S = tokens_PS.shape
    G, R = keys_PG.shape[1], max_new_tokens
    if chunk <= 0 or rows <= 0 or prompt_slots <= 0:
        raise ValueError(f"rows, prompt_slots and chunk must be > 0, got rows={rows}, "
                         f"prompt_slots={prompt_slots}, chunk={chunk}")
    D, Q = min(rows, P * G), min(prompt_slots, P)
    static = dict(strategy=strategy, eos_ids=tuple(eos_ids),
                  stop_sequences=tuple(tuple(s) for s in stop_sequences))
    keys_N = jnp.reshape(keys_PG, (P * G,))
    st = init_rows(cfg, Q, D, S, R, keys_N[:1].reshape(1, 1))
    out_tok = np.full((P, G, R), PAD_ID, np.int32)
    out_lp = np.zeros((P, G, R), np.float32)
    out_len = np.zeros((P, G), np.int32)
    out_fin = np.zeros((P, G), np.int32)
    row_sample = [-1] * D  # sample index p * G + g held by each row
    slot_of: dict[int, int] = {}  # cached prompt -> prompt slot
    left = [0] * Q  # samples of the slot's prompt not yet harvested
    free_slots = list(range(Q))
    nxt, token_steps, decode_steps = 0, 0, 0
    done_D = np.ones((D,), bool)
    while True:
        finished = [d for d in range(D) if row_sample[d] >= 0 and done_D[d]]
        if finished:
            r = jax.device_get(st.rows)
            for d in finished:
                p, g = divmod(row_sample[d], G)
                out_tok[p, g], out_lp[p, g] = r.tokens_BGR[d, 0], r.logprobs_BGR[d, 0]
                out_len[p, g], out_fin[p, g] = r.lengths_BG[d, 0], r.finish_BG[d, 0]
                row_sample[d] = -1
                q = slot_of[p]
                left[q] -= 1
                if left[q] == 0:
                    del slot_of[p]
                    free_slots.append(q)
        start_D = np.zeros((D,), bool)
        pidx_D = np.zeros((D,), np.int32)
        for d in range(D):
            if row_sample[d] >= 0 or nxt == P * G:
                continue
            p = nxt // G
            if p not in slot_of:
                if not free_slots:
                    break
                q = free_slots.pop(0)
                st = prefill_prompt(cfg, params, st, q, tokens_PS[p:p + 1], lens_P[p:p + 1],
                                    prefill_chunk=prefill_chunk)
                slot_of[p], left[q] = q, G
            row_sample[d], start_D[d], pidx_D[d] = nxt, True, slot_of[p]
            nxt += 1
        if start_D.any():
            st = start_rows(st, jnp.asarray(start_D), jnp.asarray(pidx_D),
                            keys_N[np.asarray(row_sample).clip(0)], **static)
            token_steps += int(start_D.sum())
        if all(s < 0 for s in row_sample):
            break
        st, n = decode_rows(cfg, params, st, steps=chunk, decode_impl=decode_impl, **static)
        n = int(n)
        decode_steps += n
        token_steps += n * D
        done_D = np.asarray(st.rows.done_BG)[:, 0]
    return continuous.ContinuousOutput(out_tok, out_lp, out_len, out_fin, token_steps,
                                       decode_steps)
