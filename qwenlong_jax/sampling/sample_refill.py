"""Sample-level continuous batching: decode rows decoupled from prompt caches. A block of W
decode rows that finished takes the next W samples, of whichever prompt is next, instead of
waiting for the slowest of the G samples of its prompt.

    out = sample_refill(cfg, params, prompt_tokens_PS, prompt_lens_P, keys_PG, rows=D,
                        block=W, prompt_slots=Q, max_new_tokens=R, strategy=..., chunk=16)
    out.tokens_PGR, out.logprobs_PGR, out.lengths_PG, out.finish_PG   # as sample_groups' B = P
    out.token_steps, out.decode_steps          # (slot_state.ContinuousOutput)

Device state: Q prompt caches [L, Q, S, K, H] (with each prompt's last logits) and D = Nb x W
decode rows in Nb blocks of W (W divides G). Each block points at a prompt slot (pidx_Nb) and
holds W samples of that prompt; each row has its own response cache row [L, Nb, W, R, K, H],
key, step counter, tokens and stop bookkeeping (slot_state.SlotState with B = Nb, G = W).

Each prompt cache is read once per decode step whatever rows use it: before each chunk the
host lists the rows of each prompt slot (`prompt_rows`: at most G, a prompt has G samples),
and the step's attention gathers those rows' queries into one [Q, G] matrix against the slot's
prompt blocks, then the per-row response part (decode_attention.xla_decode_attention with
prompt_rows). So W = 1 refills every sample on its own at the prompt-cache reads of lockstep;
the price is Q x G query rows in the prompt attention (padding included) for Nb x W rows.

The host loop alternates `decode_rows` (`chunk` steps, or fewer when every row is done or, while
samples are waiting, as soon as a block is done) with harvesting and refilling, samples taken in (prompt, sample) order:
- a block whose W rows are done hands its samples to the output; a prompt slot whose G
  samples are all harvested is free;
- a free block takes the next W samples; if their prompt is not cached yet, it is prefilled
  into a free prompt slot (`prefill_prompt`); with no free prompt slot the block waits;
- the blocks that took samples draw their first tokens from their prompt's prefill logits
  (`start_rows`, one call for all of them);
- once every sample has started, the busy blocks are packed into fewer rows (the drain, as in
  continuous.py).

Token for token the same samples as `sampler.sample_groups` (tested): sample (p, g) draws token
t from fold_in(keys_PG[p, g], t) whatever row, block, prompt slot or step it runs in, and every
op of a step is row-independent.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.parallel import sharding
from qwenlong_jax.sampling import decode, prompt_cache, refill_loop, slot_state, strategies
from qwenlong_jax.sampling.decode import PAD_ID
from qwenlong_jax.sampling.row_state import RowState, init_rows, prefill_prompt, start_rows


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("strategy", "eos_ids", "stop_sequences", "steps", "decode_impl"),
    donate_argnames=("st",),
)
def decode_rows(
    cfg: ModelConfig,
    params,
    st: RowState,
    rows_QG,
    pos_NbW,
    stop_on_free=False,
    *,
    strategy,
    eos_ids,
    stop_sequences,
    steps: int,
    decode_impl: decode.DecodeImpl = "xla",
):
    """Up to `steps` decode steps of every live row (stops early when all are done, or, with
    stop_on_free, when a block busy at the start is done). Row (b, w) reads prompt slot
    pos_NbW[b, w] // G, whose rows are rows_QG (prompt_rows). Returns (state, steps run)."""
    with sharding.rules(**decode.SAMPLER_RULES):
        rows, n = refill_loop.decode_loop(
            cfg,
            slot_state.cast_params(cfg, params),
            st.cache,
            st.rows,
            stop_on_free,
            strategy=strategy,
            eos_ids=eos_ids,
            stop_sequences=stop_sequences,
            steps=steps,
            decode_impl=decode_impl,
            prompt_rows=(rows_QG, pos_NbW),
        )
        return dataclasses.replace(st, rows=rows), n


def prompt_rows(pidx_Nb, busy_Nb, Q: int, G: int, W: int):
    """(rows_QG, pos_NbW) for the decode step: the flat rows (b * W + w) of each prompt slot's
    busy blocks (at most G: a prompt has G samples), and each row's place p * G + j there.
    Idle blocks read slot 0's first place (their outputs are masked)."""
    rows_QG = np.zeros((Q, G), np.int32)
    pos_NbW = np.zeros((len(pidx_Nb), W), np.int32)
    fill = [0] * Q
    for b, (q, busy) in enumerate(zip(pidx_Nb, busy_Nb)):
        if not busy:
            continue
        for w in range(W):
            rows_QG[q, fill[q]], pos_NbW[b, w] = b * W + w, q * G + fill[q]
            fill[q] += 1
    return rows_QG, pos_NbW


def sample_refill(
    cfg: ModelConfig,
    params,
    prompt_tokens_PS,
    prompt_lens_P,
    keys_PG,
    *,
    rows: int,
    prompt_slots: int,
    max_new_tokens: int,
    block: int = 1,
    strategy: strategies.AnyStrategy = strategies.GREEDY,
    eos_ids: tuple[int, ...] = (),
    stop_sequences: tuple[tuple[int, ...], ...] = (),
    prefill_chunk: int = 512,
    chunk: int = 16,
    drain: bool = True,
    decode_impl: decode.DecodeImpl = "xla",
) -> slot_state.ContinuousOutput:
    """P prompts x G samples through `rows` decode rows (blocks of `block` rows sharing a
    prompt) and `prompt_slots` prompt caches; the same samples as sample_groups on all P."""
    tokens_PS = np.asarray(prompt_tokens_PS)
    lens_P = np.asarray(prompt_lens_P)
    P, S = tokens_PS.shape
    G, R, W = keys_PG.shape[1], max_new_tokens, block
    if chunk <= 0 or rows <= 0 or prompt_slots <= 0 or W <= 0 or G % W or rows % W:
        raise ValueError(
            f"rows, prompt_slots, block and chunk must be > 0 and block must divide "
            f"G={G} and rows, got rows={rows}, prompt_slots={prompt_slots}, "
            f"block={block}, chunk={chunk}"
        )
    U = P * G // W  # units of W samples, in (prompt, sample) order
    Nb, Q = min(rows // W, U), min(prompt_slots, P)
    static = dict(strategy=strategy, eos_ids=tuple(eos_ids), stop_sequences=tuple(tuple(s) for s in stop_sequences))
    keys_UW = jnp.reshape(keys_PG, (U, W))
    st = init_rows(cfg, Q, Nb, W, S, R, keys_UW[:1, :1])
    out_tok = np.full((P, G, R), PAD_ID, np.int32)
    out_lp = np.zeros((P, G, R), np.float32)
    out_len = np.zeros((P, G), np.int32)
    out_fin = np.zeros((P, G), np.int32)
    unit_of = [-1] * Nb  # unit held by each block
    slot_of: dict[int, int] = {}  # cached prompt -> prompt slot
    left = [0] * Q  # units of the slot's prompt not yet harvested
    free_slots = list(range(Q))
    nxt, token_steps, decode_steps = 0, 0, 0
    done_Nb = np.ones((Nb,), bool)
    pidx_host = np.zeros((Nb,), np.int32)  # st.pidx_Nb on the host
    while True:
        finished = [b for b in range(len(unit_of)) if unit_of[b] >= 0 and done_Nb[b]]
        if finished:
            r = jax.device_get(st.rows)
            for b in finished:
                p, j = divmod(unit_of[b], G // W)
                g = slice(j * W, (j + 1) * W)
                out_tok[p, g], out_lp[p, g] = r.tokens_BGR[b], r.logprobs_BGR[b]
                out_len[p, g], out_fin[p, g] = r.lengths_BG[b], r.finish_BG[b]
                unit_of[b] = -1
                q = slot_of[p]
                left[q] -= 1
                if left[q] == 0:
                    del slot_of[p]
                    free_slots.append(q)
        start_Nb = np.zeros((len(unit_of),), bool)
        pidx_Nb = np.zeros((len(unit_of),), np.int32)
        for b in range(len(unit_of)):
            if unit_of[b] >= 0 or nxt == U:
                continue
            p = nxt // (G // W)
            if p not in slot_of:
                if not free_slots:
                    break
                q = free_slots.pop(0)
                n = prompt_cache.own_length(int(lens_P[p]), S, prefill_chunk)
                st = prefill_prompt(
                    cfg, params, st, q, tokens_PS[p : p + 1, :n], lens_P[p : p + 1], prefill_chunk=prefill_chunk
                )
                slot_of[p], left[q] = q, G // W
            unit_of[b], start_Nb[b], pidx_Nb[b] = nxt, True, slot_of[p]
            pidx_host[b] = slot_of[p]
            nxt += 1
        if start_Nb.any():
            st = start_rows(
                st, jnp.asarray(start_Nb), jnp.asarray(pidx_Nb), keys_UW[np.asarray(unit_of).clip(0)], **static
            )
            token_steps += int(start_Nb.sum()) * W
        busy = [b for b in range(len(unit_of)) if unit_of[b] >= 0]
        if not busy:
            break
        n = refill_loop.drain_size(len(busy), len(unit_of))
        if drain and nxt == U and n <= len(unit_of) // 2:  # the drain: busy blocks packed
            idx = busy + [busy[0]] * (n - len(busy))
            rows_st = slot_state.take_slots(st.rows, jnp.asarray(idx, jnp.int32), jnp.asarray(np.arange(n) < len(busy)))
            st = dataclasses.replace(st, pidx_Nb=st.pidx_Nb[np.asarray(idx)], rows=rows_st)
            unit_of, pidx_host = [unit_of[b] for b in busy] + [-1] * (n - len(busy)), pidx_host[idx]
        rows_QG, pos_NbW = prompt_rows(pidx_host, [u >= 0 for u in unit_of], Q, G, W)
        stop_on_free = nxt < U or (drain and len(unit_of) > 1)
        st, n = decode_rows(
            cfg, params, st, rows_QG, pos_NbW, stop_on_free, steps=chunk, decode_impl=decode_impl, **static
        )
        n = int(n)
        decode_steps += n
        token_steps += n * len(unit_of) * W
        done_Nb = np.asarray(np.asarray(st.rows.done_BG).all(axis=1))
    return slot_state.ContinuousOutput(out_tok, out_lp, out_len, out_fin, token_steps, decode_steps)
