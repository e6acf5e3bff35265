"""Attention of one (q chunk, kv chunk) pair, the unit of work of ring attention.

Forward returns the pair's normalised output and log-sum-exp, which `merge` folds into the
running result (an online softmax over ring steps). Backward takes the GLOBAL log-sum-exp and
delta = rowsum(o * do) of the final output, so the pair's dq/dk/dv are exact partial gradients.

Two implementations behind one interface (layouts [B, C, N, H] / [B, C, K, H], f32 results):
  xla    plain jnp; materialises the pair's [B, K, G, C, C] scores. Fine for short chunks and
         fast to compile on CPU (the default there).
  flash  the Pallas kernels of kernels/flash.py on the pair (padding, GQA, segment skipping
         included): O(C) memory per pair, the default on GPU/TPU where chunks are long.
`diagonal` means q and kv are the same global chunk (causal = lower triangle); off-diagonal
pairs that are computed at all are fully visible (apart from segment ids).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

from kernels import backend, flash
from kernels.block_mask import MaskSpec
from kernels.block_sizes import FlashStatic, block_sizes
from kernels.reference import MASK_VALUE

PairImpl = Literal["xla", "flash"]


@dataclasses.dataclass(frozen=True)
class PairStatic:
    impl: PairImpl
    has_segments: bool
    shared_prefix_segment: int | None
    sm_scale: float
    block_q: int | None = None  # flash only
    block_k: int | None = None
    interpret: bool = True
    kernel: str = "loop"  # flash only: "loop" | "grid" (kernels/flash.py)


def merge(o_BCNH, lse_BCN, o_i, lse_i):
    """Combine two normalised partial softmax results by their log-sum-exps."""
    lse = jnp.logaddexp(lse_BCN, lse_i)
    w, w_i = jnp.exp(lse_BCN - lse), jnp.exp(lse_i - lse)
    return o_BCNH * w[..., None] + o_i * w_i[..., None], lse


def pair_forward(ps: PairStatic, diagonal: bool, q_BCNH, k_BCKH, v_BCKH, q_seg_BC, kv_seg_BC):
    """(o_BCNH f32 normalised, lse_BCN f32); rows with no visible key give o=0, lse=MASK_VALUE."""
    if ps.impl == "flash":
        return _flash_forward(ps, diagonal, q_BCNH, k_BCKH, v_BCKH, q_seg_BC, kv_seg_BC)
    B, C, N, H = q_BCNH.shape
    K = k_BCKH.shape[2]
    mask = _pair_mask(ps, q_seg_BC, kv_seg_BC, diagonal)
    s = _scores(ps, q_BCNH.reshape(B, C, K, N // K, H), k_BCKH, mask)
    m = jnp.max(s, axis=-1)
    p = jnp.where(mask, jnp.exp(s - m[..., None]), 0.0)
    l = jnp.sum(p, axis=-1)
    empty = l == 0.0
    l_safe = jnp.where(empty, 1.0, l)
    o = jnp.einsum("bkgcs,bskh->bckgh", p.astype(v_BCKH.dtype), v_BCKH, preferred_element_type=jnp.float32)
    lse = jnp.where(empty, MASK_VALUE, m + jnp.log(l_safe))  # [B, K, G, C]
    o = o / l_safe.transpose(0, 3, 1, 2)[..., None]
    return o.reshape(B, C, N, H), lse.transpose(0, 3, 1, 2).reshape(B, C, N)


def pair_backward(
    ps: PairStatic, diagonal: bool, q_BCNH, k_BCKH, v_BCKH, q_seg_BC, kv_seg_BC, do_BCNH, lse_BCN, delta_BCN
):
    """(dq_BCNH, dk_BCKH, dv_BCKH), f32, scale applied."""
    if ps.impl == "flash":
        return _flash_backward(ps, diagonal, q_BCNH, k_BCKH, v_BCKH, q_seg_BC, kv_seg_BC, do_BCNH, lse_BCN, delta_BCN)
    B, C, N, H = q_BCNH.shape
    K = k_BCKH.shape[2]
    G = N // K
    q, do = q_BCNH.reshape(B, C, K, G, H), do_BCNH.reshape(B, C, K, G, H)

    def rows(x):  # [B, C, N] -> [B, K, G, C, 1]
        return x.reshape(B, C, K, G).transpose(0, 2, 3, 1)[..., None]

    mask = _pair_mask(ps, q_seg_BC, kv_seg_BC, diagonal)
    s = _scores(ps, q, k_BCKH, mask)
    p = jnp.where(mask, jnp.exp(s - rows(lse_BCN)), 0.0)
    dv = jnp.einsum("bkgcs,bckgh->bskh", p.astype(do.dtype), do, preferred_element_type=jnp.float32)
    dp = jnp.einsum("bckgh,bskh->bkgcs", do, v_BCKH, preferred_element_type=jnp.float32)
    ds = (p * (dp - rows(delta_BCN))).astype(q.dtype)
    dq = jnp.einsum("bkgcs,bskh->bckgh", ds, k_BCKH, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bkgcs,bckgh->bskh", ds, q, preferred_element_type=jnp.float32)
    return dq.reshape(B, C, N, H) * ps.sm_scale, dk * ps.sm_scale, dv


def _pair_mask(ps: PairStatic, q_seg_BC, kv_seg_BC, diagonal: bool):
    """[B|1, 1, 1, C, C] mask (broadcasts against [B, K, G, C, C] scores)."""
    C = q_seg_BC.shape[1]
    mask = jnp.ones((1, C, C), bool)
    if diagonal:
        mask = mask & (jnp.arange(C)[None, :] <= jnp.arange(C)[:, None])[None]
    if ps.has_segments:
        q, kv = q_seg_BC[:, :, None], kv_seg_BC[:, None, :]
        ok = q == kv
        if ps.shared_prefix_segment is not None:
            ok = ok | ((kv == ps.shared_prefix_segment) & (q != 0))
        mask = mask & ok
    return mask[:, None, None]


def _scores(ps: PairStatic, q_BCKGH, k_BCKH, mask):
    s = jnp.einsum("bckgh,bskh->bkgcs", q_BCKGH, k_BCKH, preferred_element_type=jnp.float32)
    return jnp.where(mask, s * ps.sm_scale, MASK_VALUE)


# ----------------------------------------------------------------------------- flash impl
def _flash_static(ps: PairStatic, diagonal: bool, C: int) -> FlashStatic:
    blocks = block_sizes(C, C, ps.block_q, ps.block_k, backend.target_backend())
    mask = MaskSpec(
        causal=diagonal, q_len=C, kv_len=C, has_segments=ps.has_segments, shared_prefix_segment=ps.shared_prefix_segment
    )
    return FlashStatic(
        mask=mask,
        sm_scale=ps.sm_scale,
        block_q=blocks.block_q,
        block_k=blocks.block_k,
        interpret=ps.interpret,
        kernel=ps.kernel,
    )


def _padded(fs: FlashStatic, ps: PairStatic, q, k, v, q_seg, kv_seg):
    segs = (q_seg, kv_seg) if ps.has_segments else (None, None)
    return flash.pad_inputs(fs, q, k, v, *segs)


def _flash_forward(ps, diagonal, q_BCNH, k_BCKH, v_BCKH, q_seg_BC, kv_seg_BC):
    C = q_BCNH.shape[1]
    fs = _flash_static(ps, diagonal, C)
    o, lse = flash.flash_forward(fs, *_padded(fs, ps, q_BCNH, k_BCKH, v_BCKH, q_seg_BC, kv_seg_BC))
    return (o[:, :, :C].transpose(0, 2, 1, 3).astype(jnp.float32), lse[:, :, :C, 0].transpose(0, 2, 1))


def _flash_backward(ps, diagonal, q_BCNH, k_BCKH, v_BCKH, q_seg_BC, kv_seg_BC, do_BCNH, lse_BCN, delta_BCN):
    C = q_BCNH.shape[1]
    fs = _flash_static(ps, diagonal, C)
    q, k, v, q_seg, kv_seg = _padded(fs, ps, q_BCNH, k_BCKH, v_BCKH, q_seg_BC, kv_seg_BC)
    Cp = q.shape[2]

    def rows(x_BCN):  # -> [B, N, Cp, 1]; padded rows have do = 0, so their lse/delta are moot
        return jnp.pad(x_BCN.transpose(0, 2, 1), ((0, 0), (0, 0), (0, Cp - C)))[..., None]

    do = jnp.pad(do_BCNH, ((0, 0), (0, Cp - C), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
    dq, dk, dv = flash.flash_backward(
        fs, q, k, v, q_seg, kv_seg, do, rows(lse_BCN), rows(delta_BCN), grad_dtype=jnp.float32
    )

    def back(x):  # padded [B, N, Cp, H] -> [B, C, N, H]
        return x[:, :, :C].transpose(0, 2, 1, 3)

    return back(dq), back(dk), back(dv)
