"""Shared-prefix decode: G samples per prompt read ONE prompt KV cache; a lax.while_loop.

    state = init_state(...); state = decode_loop(...)     # (sample_groups wires these up)

One step feeds each sample's previous token at RoPE position prompt_len + t, writes its k/v at
response slot t of the per-sample response cache [L, B, G, R, K, H], and attends over
[prompt cache (< prompt_len) | own response (<= t)] (decode_attention.py: the xla and pallas
paths). The prompt cache [L, B, S, K, H] is read as is for all G samples.

All samples advance in lockstep (response slot t is the same for every sample); a sample that
finished keeps computing but its outputs are masked to padding. The loop stops when every
sample is done or R tokens were generated. (Slot R-1 of the response cache is never written:
the R-th token is sampled but never fed back; kept for simpler shapes.)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax

from qwenlong_jax.models import transformer
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.parallel import sharding
from qwenlong_jax.sampling import strategies
from qwenlong_jax.sampling.decode_attention import ATTENTION, DECODE_IMPLS, DecodeImpl
from qwenlong_jax.sampling.prompt_cache import PromptCache

RESP_AXES = ("layers", "batch", None, None, "kv_heads", None)  # [L, B, G, R, K, H]
# The sampler's layout (sharding.rules): prompts over every mesh axis the weights leave to the
# batch -- data, fsdp AND sequence. A decode step has one token per sample, nothing for the
# sequence axis to split, so with the training layout the chips of a sequence group would hold
# the same caches and compute the same tokens. Splitting the batch over it instead ("more
# prompts per call": rl.rollout_batch a multiple of data*fsdp*sequence) keeps the per-chip
# caches and step time of the training layout and does sequence-times more prompts per call;
# the step-time model (qwenlong_jax/capacity/roofline.py) prefers it to splitting the prompt cache over
# sequence with a log-sum-exp merge, which leaves the weight reads of a step at B/4 prompts.
SAMPLER_RULES = dict(batch=("data", "fsdp", "sequence"), length=())
# Inside a decode step, outside attention: tokens over data and sequence only, so the hidden
# dim stays split over fsdp like the weights' and every matmul runs where its weight shard
# lives (partial sums reduced over fsdp: a few MB per layer), instead of all-gathering every
# layer's weights over fsdp at every step (GBs per step per chip).
STEP_RULES = dict(batch=("data", "sequence"), length=())

FINISH_LENGTH, FINISH_EOS, FINISH_STOP = 0, 1, 2
FINISH_REASONS = ("length", "eos", "stop")
PAD_ID = 0  # token written after a sample finished (its logprob is 0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeState:
    step: jax.Array  # int32: tokens generated so far (for every sample)
    resp_k_LBGRKH: jax.Array
    resp_v_LBGRKH: jax.Array
    tokens_BGR: jax.Array
    logprobs_BGR: jax.Array
    done_BG: jax.Array
    lengths_BG: jax.Array  # tokens kept per sample (EOS / stop sequence included)
    finish_BG: jax.Array  # FINISH_* codes
    logits_BGRV: jax.Array | None  # debug: every step's logits (None unless asked for)


def decode_step(
    cfg: ModelConfig,
    params: dict,
    cache: PromptCache,
    resp_k_LBGRKH,
    resp_v_LBGRKH,
    tokens_BG: jax.Array,
    slot,
    decode_impl: DecodeImpl = "xla",
    prompt_rows=None,
):
    """Logits [B, G, V] after feeding `tokens_BG` at response slot `slot` (RoPE position
    prompt_len + slot; response slots < slot must be filled), and the new per-layer k/v
    [L, B, G, K, H] to store at that slot. `slot`: one int, or [B, G] (each sample its own).
    prompt_rows (xla only): which of the cache's P prompts each row reads
    (decode_attention.xla_decode_attention); None: row b reads prompt b."""
    if decode_impl not in ATTENTION:
        raise ValueError(f"decode_impl: {decode_impl!r} is not one of {', '.join(DECODE_IMPLS)}")
    if prompt_rows is not None and decode_impl != "xla":
        raise ValueError(f"decode_impl={decode_impl!r}: rows indexing a prompt cache need 'xla'")
    B, G = tokens_BG.shape
    step = slot
    attention = ATTENTION[decode_impl]
    if prompt_rows is None:
        lens_BG, extra = cache.lens_B[:, None], {}
    else:
        rows_PJ, pos_BG = prompt_rows
        lens_BG, extra = cache.lens_B[pos_BG // rows_PJ.shape[1]], dict(prompt_rows=prompt_rows)
    positions = (lens_BG + step).astype(jnp.int32)
    positions_M1 = jnp.broadcast_to(positions, (B, G)).reshape(B * G, 1)

    def attend(idx, q_M1NH, k_M1KH, v_M1KH, _state):
        # The caches' layout for the attention (batch over every axis it can take); the rest
        # of the step runs in STEP_RULES' weight-stationary layout.
        with sharding.rules(**SAMPLER_RULES):
            split = lambda a, ax: sharding.constrain(a.reshape((B, G) + a.shape[2:]), ("batch", None, ax, None))  # noqa: E731
            q, k, v = split(q_M1NH, "heads"), split(k_M1KH, "kv_heads"), split(v_M1KH, "kv_heads")
            out_BGNH = attention(
                q,
                k,
                v,
                cache.k_LBSKH,
                cache.v_LBSKH,
                cache.lens_B,
                resp_k_LBGRKH,
                resp_v_LBGRKH,
                step,
                layer=idx,
                **extra,
            )
        return out_BGNH.reshape(B * G, 1, *out_BGNH.shape[2:]), (k, v)

    with sharding.rules(**STEP_RULES):
        x = transformer.embed(cfg, params, tokens_BG.reshape(B * G, 1), gather_table=False)
        x, (k_LBGKH, v_LBGKH) = transformer.decoder_stack(cfg, params["layers"], x, positions_M1, attend, None)
        h = transformer.final_hidden(cfg, params, x)
        logits = transformer.logits_from_hidden(cfg, params, h)
    return logits.reshape(B, G, -1), k_LBGKH, v_LBGKH


def step_keys(keys_BG: jax.Array, step) -> jax.Array:
    """Key of sample (b, g) at `step` (an int, or [B, G]): fold_in(keys_BG[b, g], step) —
    layout independent."""
    step_BG = jnp.broadcast_to(step, keys_BG.shape)
    return jax.vmap(jax.vmap(jax.random.fold_in))(keys_BG, step_BG)


def _ends_with(tokens_BGR, end, seq: tuple[int, ...]):
    """Whether tokens[..., end - len(seq) + 1 : end + 1] == seq (False before enough tokens)."""
    m = len(seq)
    start = jnp.maximum(end - m + 1, 0)
    window = lax.dynamic_slice_in_dim(tokens_BGR, start, m, axis=2)
    return jnp.all(window == jnp.asarray(seq, jnp.int32)[None, None], axis=-1) & (end + 1 >= m)


def advance(
    strategy,
    state: DecodeState,
    logits_BGV,
    keys_BG,
    eos_ids: tuple[int, ...],
    stop_sequences: tuple[tuple[int, ...], ...],
) -> DecodeState:
    """Sample the token of slot `state.step` for every sample and update the stop bookkeeping."""
    B, G, V = logits_BGV.shape
    t = state.step
    tok_N, lp_N = strategies.sample_tokens(strategy, logits_BGV.reshape(B * G, V), step_keys(keys_BG, t).reshape(B * G))
    live_BG = ~state.done_BG
    tok_BG = jnp.where(live_BG, tok_N.reshape(B, G), PAD_ID)
    lp_BG = jnp.where(live_BG, lp_N.reshape(B, G), 0.0)
    tokens = lax.dynamic_update_slice_in_dim(state.tokens_BGR, tok_BG[:, :, None], t, axis=2)
    logprobs = lax.dynamic_update_slice_in_dim(state.logprobs_BGR, lp_BG[:, :, None], t, axis=2)
    is_eos = jnp.isin(tok_BG, jnp.asarray(eos_ids, jnp.int32)) if eos_ids else jnp.zeros_like(live_BG)
    is_stop = jnp.zeros_like(live_BG)
    for seq in stop_sequences:
        is_stop = is_stop | _ends_with(tokens, t, seq)
    eos_now, stop_now = live_BG & is_eos, live_BG & ~is_eos & is_stop
    finish = jnp.where(eos_now, FINISH_EOS, jnp.where(stop_now, FINISH_STOP, state.finish_BG))
    logits = state.logits_BGRV
    if logits is not None:
        logits = lax.dynamic_update_slice_in_dim(logits, logits_BGV[:, :, None], t, axis=2)
    return dataclasses.replace(
        state,
        step=t + 1,
        tokens_BGR=tokens,
        logprobs_BGR=logprobs,
        done_BG=state.done_BG | eos_now | stop_now,
        lengths_BG=state.lengths_BG + live_BG,
        finish_BG=finish,
        logits_BGRV=logits,
    )


def init_state(cfg: ModelConfig, B: int, G: int, R: int, *, return_logits: bool) -> DecodeState:
    L, K, H = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim
    resp = sharding.constrain(jnp.zeros((L, B, G, R, K, H), jnp.dtype(cfg.dtype)), RESP_AXES)
    return DecodeState(
        step=jnp.zeros((), jnp.int32),
        resp_k_LBGRKH=resp,
        resp_v_LBGRKH=resp,
        tokens_BGR=jnp.full((B, G, R), PAD_ID, jnp.int32),
        logprobs_BGR=jnp.zeros((B, G, R), jnp.float32),
        done_BG=jnp.zeros((B, G), bool),
        lengths_BG=jnp.zeros((B, G), jnp.int32),
        finish_BG=jnp.full((B, G), FINISH_LENGTH, jnp.int32),
        logits_BGRV=jnp.zeros((B, G, R, cfg.vocab_size), jnp.float32) if return_logits else None,
    )


def decode_loop(
    cfg: ModelConfig,
    params: dict,
    cache: PromptCache,
    state: DecodeState,
    keys_BG,
    *,
    strategy,
    eos_ids,
    stop_sequences,
    decode_impl: DecodeImpl,
) -> DecodeState:
    """Generate until every sample is done or the response cache is full.

    Entry: `state.step` tokens are already sampled (1 after the prefill's logits).
    """
    R = state.tokens_BGR.shape[2]

    def cond(s: DecodeState):
        return (s.step < R) & ~jnp.all(s.done_BG)

    def body(s: DecodeState):
        slot = s.step - 1  # the newest token goes in at response slot step-1
        prev_BG = lax.dynamic_index_in_dim(s.tokens_BGR, slot, axis=2, keepdims=False)
        logits_BGV, k_LBGKH, v_LBGKH = decode_step(
            cfg, params, cache, s.resp_k_LBGRKH, s.resp_v_LBGRKH, prev_BG, slot, decode_impl
        )
        s = dataclasses.replace(
            s,
            resp_k_LBGRKH=lax.dynamic_update_slice_in_dim(s.resp_k_LBGRKH, k_LBGKH[:, :, :, None], slot, axis=3),
            resp_v_LBGRKH=lax.dynamic_update_slice_in_dim(s.resp_v_LBGRKH, v_LBGKH[:, :, :, None], slot, axis=3),
        )
        return advance(strategy, s, logits_BGV, keys_BG, eos_ids, stop_sequences)

    return lax.while_loop(cond, body, state)
