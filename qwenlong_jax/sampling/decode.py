"""Shared-prefix decode: G samples per prompt read ONE prompt KV cache; a lax.while_loop.

    state = init_state(...); state = decode_loop(...)     # (sample_groups wires these up)

One step feeds each sample's previous token at RoPE position prompt_len + t, writes its k/v at
response slot t of the per-sample response cache [L, B, G, R, K, H], and attends over
[prompt cache (< prompt_len) | own response (<= t)]. The prompt cache [L, B, S, K, H] is read
as is for all G samples:

  xla     plain jnp (default): flash-decoding with an online softmax over prompt-cache blocks
          and over the FILLED response blocks only (a dynamic trip count: step t reads ~t
          slots, not R). The G*Q query rows of a (prompt, kv head) are one matrix against each
          prompt block ("bgkqh,bskh->bgkqs" contracts without broadcasting the cache to G).
          The current token's k/v enter as a last one-key block, so the layer scan never
          copies the response cache.
  pallas  kernels.decode_attention (flash-decoding with per-split log-sum-exp merge). The kernel
          wants the new token as the last valid entry of the response cache, so the layer's
          response cache slice gets it written first.

All samples advance in lockstep (response slot t is the same for every sample); a sample that
finished keeps computing but its outputs are masked to padding. The loop stops when every
sample is done or R tokens were generated. (Slot R-1 of the response cache is never written:
the R-th token is sampled but never fed back; kept for simpler shapes.)
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

from qwenlong_jax.parallel import sharding
from qwenlong_jax.models import transformer
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.sampling import strategies
from qwenlong_jax.sampling.prompt_cache import PromptCache

DecodeImpl = Literal["xla", "pallas"]
DECODE_IMPLS = ("xla", "pallas")
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


PROMPT_BLOCK = 8192  # prompt-cache keys per block of the xla path's online softmax


def response_block(R: int) -> int:
    """Response-cache keys per block: a power of two near R/8 in [128, 2048] (a step reads the
    filled blocks only, so at most one partly filled block; few loop trips at R = 10K)."""
    return min(R, max(128, min(2048, 1 << max(R // 8 - 1, 1).bit_length())))


def _online_block(carry, s_BGKQT, v_blk, pv: str):
    """Fold one block of scores (-inf where masked) and its values into (max, sum, acc)."""
    m, l, acc = carry
    m_new = jnp.maximum(m, jnp.max(s_BGKQT, axis=-1))
    m_use = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # nothing visible yet: keep zeros, no nan
    p = jnp.exp(s_BGKQT - m_use[..., None])
    alpha = jnp.exp(m - m_use)
    acc = alpha[..., None] * acc + jnp.einsum(pv, p.astype(v_blk.dtype), v_blk,
                                              preferred_element_type=jnp.float32)
    return m_new, alpha * l + jnp.sum(p, axis=-1), acc


def _block_start(j, block: int, n: int):
    """Start of block j, pulled back so the block stays inside [0, n) (the last block of a
    length that `block` does not divide overlaps the previous one; the overlap is masked)."""
    return jnp.minimum(j * block, n - block)


def _block(cache, layer, start, size: int, axis: int):
    """cache[..., start:start+size, ...] along `axis`; with `layer`, of cache[layer] (a cache
    with a leading layer axis is sliced block by block, never copied out layer by layer)."""
    if layer is None:
        return lax.dynamic_slice_in_dim(cache, start, size, axis)
    starts = [0] * cache.ndim
    starts[0], starts[axis + 1] = layer, start
    sizes = list(cache.shape)
    sizes[0], sizes[axis + 1] = 1, size
    return lax.dynamic_slice(cache, starts, sizes)[0]


def xla_decode_attention(q_BGNH, k_BGKH, v_BGKH, prompt_k_BSKH, prompt_v_BSKH, prompt_lens_B,
                         resp_k_BGRKH, resp_v_BGRKH, step, layer=None):
    """One new token per sample over [prompt (< len) | response (< step) | itself]; `step` is
    one int for all samples (lockstep) or [B, G] (continuous batching: each its own).

    Flash-decoding in plain jnp: an online softmax over prompt-cache blocks (PROMPT_BLOCK keys,
    all G*Q query rows of a (prompt, kv head) against each block at once), then over the
    FILLED response blocks only (ceil(step / block) of them: a dynamic trip count, so step t
    reads t slots, not R), then the current token. No score tensor spans the whole cache.
    With `layer`, the four caches are the whole [L, ...] stacks and layer `layer` is read."""
    B, G, N, H = q_BGNH.shape
    lead = 0 if layer is None else 1
    S, K = prompt_k_BSKH.shape[1 + lead], prompt_k_BSKH.shape[2 + lead]
    R = resp_k_BGRKH.shape[2 + lead]
    Q = N // K
    q = q_BGNH.reshape(B, G, K, Q, H)
    scale = H**-0.5
    f32 = jnp.float32
    carry = (jnp.full((B, G, K, Q), -jnp.inf, f32), jnp.zeros((B, G, K, Q), f32),
             jnp.zeros((B, G, K, Q, H), f32))

    Pb = min(S, PROMPT_BLOCK)

    def prompt_block(j, carry):
        start = _block_start(j, Pb, S)
        k_blk = _block(prompt_k_BSKH, layer, start, Pb, 1)
        v_blk = _block(prompt_v_BSKH, layer, start, Pb, 1)
        s = jnp.einsum("bgkqh,bskh->bgkqs", q, k_blk, preferred_element_type=f32) * scale
        pos = start + jnp.arange(Pb)
        ok_BS = (pos[None] >= j * Pb) & (pos[None] < prompt_lens_B[:, None])
        s = jnp.where(ok_BS[:, None, None, None, :], s, -jnp.inf)
        return _online_block(carry, s, v_blk, "bgkqs,bskh->bgkqh")

    carry = lax.fori_loop(0, -(-S // Pb), prompt_block, carry)

    Rb = response_block(R)

    def resp_block(j, carry):
        start = _block_start(j, Rb, R)
        k_blk = _block(resp_k_BGRKH, layer, start, Rb, 2)
        v_blk = _block(resp_v_BGRKH, layer, start, Rb, 2)
        s = jnp.einsum("bgkqh,bgrkh->bgkqr", q, k_blk, preferred_element_type=f32) * scale
        pos = start + jnp.arange(Rb)
        pos = pos[None, None, :]
        ok = (pos >= j * Rb) & (pos < step_BG1[..., None])  # [B or 1, G or 1, Rb]
        s = jnp.where(ok[:, :, None, None, :], s, -jnp.inf)
        return _online_block(carry, s, v_blk, "bgkqr,bgrkh->bgkqh")

    if jnp.ndim(step) == 0:
        step_BG1, filled = jnp.reshape(step, (1, 1)), step
    else:
        step_BG1, filled = step, jnp.max(step)
    carry = lax.fori_loop(0, lax.div(filled + Rb - 1, Rb), resp_block, carry)  # filled >= 0

    s_cur = jnp.einsum("bgkqh,bgkh->bgkq", q, k_BGKH, preferred_element_type=f32)[..., None] * scale
    m, l, acc = _online_block(carry, s_cur, v_BGKH[:, :, :, None, :], "bgkqr,bgkrh->bgkqh")
    out = acc / l[..., None]
    return out.reshape(B, G, N, H).astype(q_BGNH.dtype)


def pallas_decode_attention(q_BGNH, k_BGKH, v_BGKH, prompt_k_BSKH, prompt_v_BSKH, prompt_lens_B,
                            resp_k_BGRKH, resp_v_BGRKH, step, layer=None):
    import kernels  # lazy exports: kernels/decode.py is imported only on this path
    if layer is not None:
        prompt_k_BSKH, prompt_v_BSKH, resp_k_BGRKH, resp_v_BGRKH = (
            lax.dynamic_index_in_dim(a, layer, 0, keepdims=False)
            for a in (prompt_k_BSKH, prompt_v_BSKH, resp_k_BGRKH, resp_v_BGRKH))
    B, G = q_BGNH.shape[:2]
    step_BG = jnp.broadcast_to(step, (B, G)).astype(jnp.int32)
    resp_k = write_slots(resp_k_BGRKH, k_BGKH, step_BG, axis=2)
    resp_v = write_slots(resp_v_BGRKH, v_BGKH, step_BG, axis=2)
    resp_len_BG = step_BG + 1
    out = kernels.decode_attention(q_BGNH[:, :, None], prompt_k_BSKH, prompt_v_BSKH, prompt_lens_B,
                           resp_k, resp_v, resp_len_BG)
    return out[:, :, 0]


def write_slots(cache, new_BG, slot, axis: int):
    """cache with new_BG[b, g] written at index slot (int, or [B, G] per sample) of `axis`
    (the R axis; dims before it are [B, G] or [L, B, G])."""
    if jnp.ndim(slot) == 0:
        return lax.dynamic_update_slice_in_dim(cache, jnp.expand_dims(new_BG, axis), slot, axis)
    lead = axis - 2  # 0 for [B, G, R, ...], 1 for [L, B, G, R, ...]
    B, G = slot.shape
    idx = (slice(None),) * lead + (jnp.arange(B)[:, None], jnp.arange(G)[None, :], slot)
    return cache.at[idx].set(new_BG, mode="promise_in_bounds")


_ATTENTION = {"xla": xla_decode_attention, "pallas": pallas_decode_attention}


def decode_step(cfg: ModelConfig, params: dict, cache: PromptCache, resp_k_LBGRKH, resp_v_LBGRKH,
                tokens_BG: jax.Array, slot, decode_impl: DecodeImpl = "xla"):
    """Logits [B, G, V] after feeding `tokens_BG` at response slot `slot` (RoPE position
    prompt_len + slot; response slots < slot must be filled), and the new per-layer k/v
    [L, B, G, K, H] to store at that slot. `slot`: one int, or [B, G] (each sample its own)."""
    if decode_impl not in _ATTENTION:
        raise ValueError(f"decode_impl: {decode_impl!r} is not one of {', '.join(DECODE_IMPLS)}")
    B, G = tokens_BG.shape
    step = slot
    attention = _ATTENTION[decode_impl]
    positions = (cache.lens_B[:, None] + step).astype(jnp.int32)
    positions_M1 = jnp.broadcast_to(positions, (B, G)).reshape(B * G, 1)

    def attend(idx, q_M1NH, k_M1KH, v_M1KH, _state):
        # The caches' layout for the attention (batch over every axis it can take); the rest
        # of the step runs in STEP_RULES' weight-stationary layout.
        with sharding.rules(**SAMPLER_RULES):
            split = lambda a, ax: sharding.constrain(a.reshape((B, G) + a.shape[2:]), ("batch", None, ax, None))  # noqa: E731
            q, k, v = split(q_M1NH, "heads"), split(k_M1KH, "kv_heads"), split(v_M1KH, "kv_heads")
            out_BGNH = attention(q, k, v, cache.k_LBSKH, cache.v_LBSKH, cache.lens_B,
                                 resp_k_LBGRKH, resp_v_LBGRKH, step, layer=idx)
        return out_BGNH.reshape(B * G, 1, *out_BGNH.shape[2:]), (k, v)

    with sharding.rules(**STEP_RULES):
        x = transformer.embed(cfg, params, tokens_BG.reshape(B * G, 1))
        x, (k_LBGKH, v_LBGKH) = transformer.decoder_stack(
            cfg, params["layers"], x, positions_M1, attend, None)
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


def advance(strategy, state: DecodeState, logits_BGV, keys_BG, eos_ids: tuple[int, ...],
            stop_sequences: tuple[tuple[int, ...], ...]) -> DecodeState:
    """Sample the token of slot `state.step` for every sample and update the stop bookkeeping."""
    B, G, V = logits_BGV.shape
    t = state.step
    tok_N, lp_N = strategies.sample_tokens(strategy, logits_BGV.reshape(B * G, V),
                                           step_keys(keys_BG, t).reshape(B * G))
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
        state, step=t + 1, tokens_BGR=tokens, logprobs_BGR=logprobs,
        done_BG=state.done_BG | eos_now | stop_now, lengths_BG=state.lengths_BG + live_BG,
        finish_BG=finish, logits_BGRV=logits)


def init_state(cfg: ModelConfig, B: int, G: int, R: int, *, return_logits: bool) -> DecodeState:
    L, K, H = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim
    resp = sharding.constrain(jnp.zeros((L, B, G, R, K, H), jnp.dtype(cfg.dtype)), RESP_AXES)
    return DecodeState(
        step=jnp.zeros((), jnp.int32), resp_k_LBGRKH=resp, resp_v_LBGRKH=resp,
        tokens_BGR=jnp.full((B, G, R), PAD_ID, jnp.int32),
        logprobs_BGR=jnp.zeros((B, G, R), jnp.float32),
        done_BG=jnp.zeros((B, G), bool), lengths_BG=jnp.zeros((B, G), jnp.int32),
        finish_BG=jnp.full((B, G), FINISH_LENGTH, jnp.int32),
        logits_BGRV=jnp.zeros((B, G, R, cfg.vocab_size), jnp.float32) if return_logits else None)


def decode_loop(cfg: ModelConfig, params: dict, cache: PromptCache, state: DecodeState, keys_BG,
                *, strategy, eos_ids, stop_sequences, decode_impl: DecodeImpl) -> DecodeState:
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
            cfg, params, cache, s.resp_k_LBGRKH, s.resp_v_LBGRKH, prev_BG, slot, decode_impl)
        s = dataclasses.replace(
            s,
            resp_k_LBGRKH=lax.dynamic_update_slice_in_dim(s.resp_k_LBGRKH, k_LBGKH[:, :, :, None],
                                                          slot, axis=3),
            resp_v_LBGRKH=lax.dynamic_update_slice_in_dim(s.resp_v_LBGRKH, v_LBGKH[:, :, :, None],
                                                          slot, axis=3))
        return advance(strategy, s, logits_BGV, keys_BG, eos_ids, stop_sequences)

    return lax.while_loop(cond, body, state)
