"""Bodies of the TPU grid backward kernels (kernels/flash_tpu_bwd.py): dq and dk/dv.

Both compute transposed probabilities p^T [bk, bq] (keys on sublanes, queries on lanes) from
s^T = k q^T and the lane-dense log-sum-exp row, so the rows broadcast without a transpose. A step
outside the block runs, or on an invisible block, computes nothing; the accumulators live in
VMEM scratch and are written at the last step.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels.block_mask import element_mask
from kernels.block_runs import visible_at, visited_block
from kernels.flash_tpu import kv_padded, positions
from kernels.kernel_math import mosaic_dot, mosaic_dot_nt, mosaic_dot_tn
from kernels.reference import MASK_VALUE


def _mask_t(static, q_start, k_start, q_seg_row, kv_seg_col):
    """Transposed element mask [bk, bq] (keys on sublanes, queries on lanes)."""
    bq, bk = static.block_q, static.block_k
    return element_mask(
        static.mask,
        positions(bq, q_start, 1),
        positions(bk, k_start, 0),
        q_seg_row,
        kv_seg_col,
        kv_padded=kv_padded(static),
        shape=(bk, bq),
    )


def _probs_t(static, q, k, lse_row, mask_t):
    """p^T [bk, bq] from transposed scores k q^T and the lse row."""
    s = jnp.where(mask_t, mosaic_dot_nt(k, q) * static.sm_scale, MASK_VALUE)
    return jnp.where(mask_t, jnp.exp(s - lse_row), 0.0)


def dq_kernel(
    qmin,
    qmax,
    kmin,
    kmax,
    lo1,
    len1,
    lo2,
    len2,
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    *rest,
    static,
    nq,
    nk,
    seg,
):
    if seg:
        q_seg_ref, kv_seg_ref, dq_ref, dq_sc = rest
    else:
        q_seg_ref = kv_seg_ref = None
        dq_ref, dq_sc = rest
    bq, bk = static.block_q, static.block_k
    b, i, t = pl.program_id(0), pl.program_id(2), pl.program_id(3)

    @pl.when(t == 0)
    def _init():
        dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)

    j, in_runs = visited_block((lo1, len1, lo2, len2), b * nq + i, t)
    q_start, k_start = i * bq, j * bk
    visible = in_runs & visible_at(static, q_start, k_start, b, i, j, nq, nk, qmin, qmax, kmin, kmax)

    @pl.when(visible)
    def _compute():
        q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
        mask_t = _mask_t(
            static,
            q_start,
            k_start,
            None if q_seg_ref is None else q_seg_ref[...],
            None if kv_seg_ref is None else kv_seg_ref[...],
        )
        p_t = _probs_t(static, q, k, lse_ref[...], mask_t)
        ds_t = p_t * (mosaic_dot_nt(v, do) - delta_ref[...])
        dq_sc[...] += mosaic_dot_tn(ds_t.astype(k.dtype), k)

    @pl.when(t == nk - 1)
    def _finish():
        dq_ref[...] = (dq_sc[...] * static.sm_scale).astype(dq_ref.dtype)


def dkdv_kernel(
    qmin,
    qmax,
    kmin,
    kmax,
    lo1,
    len1,
    lo2,
    len2,
    q_ref,
    k_ref,
    v_ref,
    do_ref,
    lse_ref,
    delta_ref,
    *rest,
    static,
    nq,
    nk,
    seg,
    group,
):
    if seg:
        q_seg_ref, kv_seg_ref, dk_ref, dv_ref, dk_sc, dv_sc = rest
    else:
        q_seg_ref = kv_seg_ref = None
        dk_ref, dv_ref, dk_sc, dv_sc = rest
    bq, bk = static.block_q, static.block_k
    b, j, s = pl.program_id(0), pl.program_id(2), pl.program_id(3)
    t = lax.rem(s, nq)

    @pl.when(s == 0)
    def _init():
        dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
        dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

    i, in_runs = visited_block((lo1, len1, lo2, len2), b * nk + j, t)
    q_start, k_start = i * bq, j * bk
    visible = in_runs & visible_at(static, q_start, k_start, b, i, j, nq, nk, qmin, qmax, kmin, kmax)

    @pl.when(visible)
    def _compute():
        q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
        mask_t = _mask_t(
            static,
            q_start,
            k_start,
            None if q_seg_ref is None else q_seg_ref[...],
            None if kv_seg_ref is None else kv_seg_ref[...],
        )
        p_t = _probs_t(static, q, k, lse_ref[...], mask_t)
        dv_sc[...] += mosaic_dot(p_t.astype(do.dtype), do)
        ds_t = p_t * (mosaic_dot_nt(v, do) - delta_ref[...])
        dk_sc[...] += mosaic_dot(ds_t.astype(q.dtype), q)

    @pl.when(s == group * nq - 1)
    def _finish():
        dk_ref[...] = (dk_sc[...] * static.sm_scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)
