"""One decode step's attention: each sample's new token over [its prompt's cache (< prompt_len)
| its own response cache (< step) | itself]; the G samples of a prompt read ONE prompt cache.

    out_BGNH = ATTENTION[decode_impl](q_BGNH, k_BGKH, v_BGKH, prompt_k, prompt_v, prompt_lens_B,
                                      resp_k, resp_v, step, layer=l)

  xla     plain jnp (default): flash-decoding with an online softmax over prompt-cache blocks
          and over the FILLED response blocks only (a dynamic trip count: step t reads ~t
          slots, not R). The G*Q query rows of a (prompt, kv head) are one matrix against each
          prompt block ("bgkqh,bskh->bgkqs" contracts without broadcasting the cache to G).
          The current token's k/v enter as a last one-key block, so the layer scan never
          copies the response cache.
  pallas  kernels.decode_attention (flash-decoding with per-split log-sum-exp merge). The kernel
          wants the new token as the last valid entry of the response cache, so the layer's
          response cache slice gets it written first.

`step` is one int for all samples (lockstep) or [B, G] (continuous batching: each its own).
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp
from jax import lax

DecodeImpl = Literal["xla", "pallas"]
DECODE_IMPLS = ("xla", "pallas")
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
    acc = alpha[..., None] * acc + jnp.einsum(pv, p.astype(v_blk.dtype), v_blk, preferred_element_type=jnp.float32)
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


def xla_decode_attention(
    q_BGNH,
    k_BGKH,
    v_BGKH,
    prompt_k_BSKH,
    prompt_v_BSKH,
    prompt_lens_B,
    resp_k_BGRKH,
    resp_v_BGRKH,
    step,
    layer=None,
    prompt_rows=None,
):
    """One new token per sample over [prompt (< len) | response (< step) | itself]; `step` is
    one int for all samples (lockstep) or [B, G] (continuous batching: each its own).

    Flash-decoding in plain jnp: an online softmax over prompt-cache blocks (PROMPT_BLOCK keys,
    all G*Q query rows of a (prompt, kv head) against each block at once), then over the
    FILLED response blocks only (ceil(step / block) of them: a dynamic trip count, so step t
    reads t slots, not R), then the current token. No score tensor spans the whole cache.
    With `layer`, the four caches are the whole [L, ...] stacks and layer `layer` is read.

    prompt_rows = (rows_PJ, pos_BG): the prompt cache has P entries (not B) and row (b, g) attends
    to entry p where pos_BG[b, g] = p * J + j and rows_PJ[p, j] = b * G + g: the
    rows of an entry are gathered into one matrix against its blocks, so each prompt cache is
    read once per step whatever rows use it (padding entries of rows_PJ compute unused rows)."""
    B, G, N, H = q_BGNH.shape
    lead = 0 if layer is None else 1
    S, K = prompt_k_BSKH.shape[1 + lead], prompt_k_BSKH.shape[2 + lead]
    R = resp_k_BGRKH.shape[2 + lead]
    Q = N // K
    q = q_BGNH.reshape(B, G, K, Q, H)
    scale = H**-0.5
    f32 = jnp.float32
    if prompt_rows is None:
        qp = q
    else:  # the query rows of each prompt-cache entry, [P, J, K, Q, H]
        rows_PJ, pos_BG = prompt_rows
        qp = q.reshape(B * G, K, Q, H)[rows_PJ]
    X, Y = qp.shape[:2]
    carry = (jnp.full((X, Y, K, Q), -jnp.inf, f32), jnp.zeros((X, Y, K, Q), f32), jnp.zeros((X, Y, K, Q, H), f32))

    Pb = min(S, PROMPT_BLOCK)

    def prompt_block(j, carry):
        start = _block_start(j, Pb, S)
        k_blk = _block(prompt_k_BSKH, layer, start, Pb, 1)
        v_blk = _block(prompt_v_BSKH, layer, start, Pb, 1)
        s = jnp.einsum("bgkqh,bskh->bgkqs", qp, k_blk, preferred_element_type=f32) * scale
        pos = start + jnp.arange(Pb)
        ok_BS = (pos[None] >= j * Pb) & (pos[None] < prompt_lens_B[:, None])
        s = jnp.where(ok_BS[:, None, None, None, :], s, -jnp.inf)
        return _online_block(carry, s, v_blk, "bgkqs,bskh->bgkqh")

    carry = lax.fori_loop(0, -(-S // Pb), prompt_block, carry)
    if prompt_rows is not None:  # back to the rows: row (b, g) takes entry pos_BG[b, g]
        carry = tuple(c.reshape((X * Y,) + c.shape[2:])[pos_BG] for c in carry)

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


def pallas_decode_attention(
    q_BGNH, k_BGKH, v_BGKH, prompt_k_BSKH, prompt_v_BSKH, prompt_lens_B, resp_k_BGRKH, resp_v_BGRKH, step, layer=None
):
    import kernels  # lazy exports: kernels/decode.py is imported only on this path

    if layer is not None:
        prompt_k_BSKH, prompt_v_BSKH, resp_k_BGRKH, resp_v_BGRKH = (
            lax.dynamic_index_in_dim(a, layer, 0, keepdims=False)
            for a in (prompt_k_BSKH, prompt_v_BSKH, resp_k_BGRKH, resp_v_BGRKH)
        )
    B, G = q_BGNH.shape[:2]
    step_BG = jnp.broadcast_to(step, (B, G)).astype(jnp.int32)
    resp_k = write_slots(resp_k_BGRKH, k_BGKH, step_BG, axis=2)
    resp_v = write_slots(resp_v_BGRKH, v_BGKH, step_BG, axis=2)
    resp_len_BG = step_BG + 1
    out = kernels.decode_attention(
        q_BGNH[:, :, None], prompt_k_BSKH, prompt_v_BSKH, prompt_lens_B, resp_k, resp_v, resp_len_BG
    )
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


ATTENTION = {"xla": xla_decode_attention, "pallas": pallas_decode_attention}
