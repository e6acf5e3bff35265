"""The decode loop both refill samplers run between refills (continuous.py: group refill,
sample_refill.py: per-sample rows), and the row count of the drain."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax

from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.sampling import decode, decode_attention
from qwenlong_jax.sampling.slot_state import (
    SlotState,
    sample_and_record,
)


def decode_loop(
    cfg: ModelConfig,
    params,
    cache,
    st: SlotState,
    stop_on_free=False,
    *,
    strategy,
    eos_ids,
    stop_sequences,
    steps: int,
    decode_impl: decode.DecodeImpl,
    prompt_rows=None,
):
    """The decode loop both refill samplers trace (inside their jit and sharding rules): up to
    `steps` steps of every live sample of `st` against the prompt `cache` (one entry per row of
    st, or the entries `prompt_rows` maps the rows to: decode.decode_step), stopping early when
    all are done or (stop_on_free) a row busy at the start is done. Returns (state, steps run)."""
    R = st.tokens_BGR.shape[2]
    busy_B = ~jnp.all(st.done_BG, axis=1)

    def cond(c):
        s, n = c
        freed = jnp.any(busy_B & jnp.all(s.done_BG, axis=1))
        return (n < steps) & ~jnp.all(s.done_BG) & ~(stop_on_free & freed)

    def body(c):
        s, n = c
        slot_BG = jnp.maximum(s.step_BG - 1, 0)  # the newest token's response slot
        prev_BG = jnp.take_along_axis(s.tokens_BGR, slot_BG[..., None], axis=2)[..., 0]
        logits, k_LBGKH, v_LBGKH = decode.decode_step(
            cfg, params, cache, s.resp_k_LBGRKH, s.resp_v_LBGRKH, prev_BG, slot_BG, decode_impl, prompt_rows
        )
        write = decode_attention.write_slots
        s = dataclasses.replace(
            s,
            resp_k_LBGRKH=write(s.resp_k_LBGRKH, k_LBGKH, slot_BG, axis=3),
            resp_v_LBGRKH=write(s.resp_v_LBGRKH, v_LBGKH, slot_BG, axis=3),
        )
        return sample_and_record(strategy, s, logits, eos_ids, stop_sequences, R), n + 1

    return lax.while_loop(cond, body, (st, jnp.zeros((), jnp.int32)))


def drain_size(busy: int, B: int) -> int:
    """Rows of the packed state for `busy` busy slots: the next power of two >= busy."""
    return min(B, 1 << max(busy - 1, 0).bit_length())
