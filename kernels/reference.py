"""Plain-jnp reference attention with the project's masking semantics.

This is the ground truth the Pallas kernels are tested against, and the model's `xla`
attention path. It materialises the full [B, N, T, S] score matrix, so it is for tests and
short sequences only.

Masking semantics (shared by every attention implementation in `kernels/`):
  * causal: query index i sees key index j only when j <= i (+ S - T offset when T != S,
    i.e. the queries are the last T positions of the key sequence).
  * segment ids: query i sees key j only when q_segment_ids[i] == kv_segment_ids[j].
    Segment id 0 marks padding by convention (padding only sees padding, so its output is
    finite and ignored).
  * shared prefix: when `shared_prefix_segment` is an int p, a key whose segment id is p is
    visible to every non-padding query (still subject to causality). This is the GRPO group
    layout `[prompt | resp_1 | ... | resp_G]`: prompt tokens have segment p, each response its
    own segment, so response i attends to the prompt and causally to itself only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Finite mask value: a fully masked row softmaxes to a uniform distribution instead of NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention_mask(
    T: int,
    S: int,
    *,
    causal: bool,
    q_segment_ids_BT: jax.Array | None = None,
    kv_segment_ids_BS: jax.Array | None = None,
    shared_prefix_segment: int | None = None,
) -> jax.Array:
    """Boolean mask [B or 1, 1, T, S]: True where query t may attend to key s."""
    mask_BNTS = jnp.ones((1, 1, T, S), dtype=bool)
    if causal:
        q_idx = jnp.arange(T)[:, None] + (S - T)
        k_idx = jnp.arange(S)[None, :]
        mask_BNTS = mask_BNTS & (k_idx <= q_idx)[None, None]
    if (q_segment_ids_BT is None) != (kv_segment_ids_BS is None):
        raise ValueError("q_segment_ids_BT and kv_segment_ids_BS must be given together")
    if q_segment_ids_BT is not None and kv_segment_ids_BS is not None:
        q_seg = q_segment_ids_BT[:, None, :, None]
        k_seg = kv_segment_ids_BS[:, None, None, :]
        seg_ok = q_seg == k_seg
        if shared_prefix_segment is not None:
            seg_ok = seg_ok | ((k_seg == shared_prefix_segment) & (q_seg != 0))
        mask_BNTS = mask_BNTS & seg_ok
    elif shared_prefix_segment is not None:
        raise ValueError("shared_prefix_segment needs segment ids")
    return mask_BNTS


def reference_attention(
    q_BTNH: jax.Array,
    k_BSKH: jax.Array,
    v_BSKH: jax.Array,
    *,
    causal: bool = True,
    q_segment_ids_BT: jax.Array | None = None,
    kv_segment_ids_BS: jax.Array | None = None,
    shared_prefix_segment: int | None = None,
    sm_scale: float | None = None,
) -> jax.Array:
    """Softmax attention with grouped-query heads (N % K == 0), f32 accumulation.

    Returns out_BTNH in q's dtype.
    """
    B, T, N, H = q_BTNH.shape
    _, S, K, _ = k_BSKH.shape
    if N % K:
        raise ValueError(f"query heads N={N} must be a multiple of kv heads K={K}")
    if sm_scale is None:
        sm_scale = H**-0.5
    G = N // K
    q_BTKGH = q_BTNH.reshape(B, T, K, G, H)
    scores_BKGTS = jnp.einsum("btkgh,bskh->bkgts", q_BTKGH, k_BSKH, preferred_element_type=jnp.float32) * sm_scale
    mask = attention_mask(
        T,
        S,
        causal=causal,
        q_segment_ids_BT=q_segment_ids_BT,
        kv_segment_ids_BS=kv_segment_ids_BS,
        shared_prefix_segment=shared_prefix_segment,
    )  # [B|1, 1, T, S]
    scores_BKGTS = jnp.where(mask[:, :, None], scores_BKGTS, MASK_VALUE)
    probs_BKGTS = jax.nn.softmax(scores_BKGTS, axis=-1)
    out_BTKGH = jnp.einsum(
        "bkgts,bskh->btkgh",
        probs_BKGTS.astype(v_BSKH.dtype),
        v_BSKH,
        preferred_element_type=jnp.float32,
    )
    return out_BTKGH.reshape(B, T, N, H).astype(q_BTNH.dtype)
