"""Compiled blockwise attention (kernels/blockwise.py): the flash contract, without Pallas.

Numerics against a float64 numpy reference (forward and the analytic backward) on the flash
tests' cases (tests/test_flash_attention.py: lengths that are not block multiples, T != S, GQA
1-8, causal and not, packed ids, the GRPO shared-prefix layout, bf16), packed == unpacked on a
GRPO group, the block schedule it runs against `block_mask.block_schedule`, memory linear in T
and the block products compiled as dot ops.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_flash_attention import CASES, Case, make_inputs, out_and_grads, segment_ids

from kernels.block_mask import MaskSpec, block_schedule
from kernels.blockwise import BlockwiseStatic, _pad, blockwise_attention, schedule
from kernels.reference import attention_mask


def reference_f64(q, k, v, ct, kw):
    """(out, (dq, dk, dv)) in float64 numpy: dense masked softmax and its analytic gradient."""
    q, k, v, ct = (np.asarray(x.astype(jnp.float32), np.float64) for x in (q, k, v, ct))
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    G = N // K
    mask = np.asarray(
        attention_mask(
            T,
            S,
            causal=kw["causal"],
            q_segment_ids_BT=kw.get("q_segment_ids_BT"),
            kv_segment_ids_BS=kw.get("kv_segment_ids_BS"),
            shared_prefix_segment=kw.get("shared_prefix_segment"),
        )
    )  # [B|1, 1, T, S]
    kr, vr = np.repeat(k, G, axis=2), np.repeat(v, G, axis=2)  # [B, S, N, H]
    scale = H**-0.5
    s = np.einsum("btnh,bsnh->bnts", q, kr) * scale
    s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = np.einsum("bnts,bsnh->btnh", p, vr)
    dp = np.einsum("btnh,bsnh->bnts", ct, vr)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    dq = np.einsum("bnts,bsnh->btnh", ds, kr) * scale
    dk = np.einsum("bnts,btnh->bsnh", ds, q).reshape(B, S, K, G, H).sum(3) * scale
    dv = np.einsum("bnts,btnh->bsnh", p, ct).reshape(B, S, K, G, H).sum(3)
    return out, (dq, dk, dv)


def run(c: Case, args, ct, kw):
    return jax.jit(
        lambda *a: out_and_grads(
            lambda q, k, v: blockwise_attention(q, k, v, block_q=c.block_q, block_k=c.block_k, **kw), a, ct
        )
    )(*args)


@pytest.mark.parametrize(
    "c",
    CASES,
    ids=lambda c: f"{c.layout}-H{c.H}-G{c.N // c.K}-{'causal' if c.causal else 'full'}-T{c.T}S{c.S}-{c.dtype}",
)
def test_blockwise_matches_float64_reference(c: Case):
    args, ct, kw = make_inputs(c)
    out, grads = run(c, args, ct, kw)
    ref_out, ref_grads = reference_f64(*args, ct, kw)
    fwd_tol, grad_tol = (1e-5, 1e-4) if c.dtype == "float32" else (3e-2, 6e-2)
    assert out.dtype == args[0].dtype and out.shape == args[0].shape
    np.testing.assert_allclose(np.asarray(out.astype(jnp.float32)), ref_out, atol=fwd_tol, rtol=0)
    for name, g, r in zip("qkv", grads, ref_grads):
        assert g.dtype == args[0].dtype and g.shape == r.shape
        np.testing.assert_allclose(np.asarray(g.astype(jnp.float32)), r, atol=grad_tol, rtol=0, err_msg=f"d{name}")


def test_blockwise_large_blocks_cover_short_and_odd_lengths():
    """Default blocks (larger than the sequence: one block, shrunk) and blocks that do not divide
    the lengths, on the prefix layout with padding."""
    for bq, bk in ((None, None), (48, 24)):
        c = Case(B=2, T=100, S=100, N=4, K=2, H=64, causal=True, layout="prefix", block_q=bq, block_k=bk)
        args, ct, kw = make_inputs(c, seed=3)
        out, grads = run(c, args, ct, kw)
        ref_out, ref_grads = reference_f64(*args, ct, kw)
        np.testing.assert_allclose(np.asarray(out), ref_out, atol=1e-5, rtol=0)
        for g, r in zip(grads, ref_grads):
            np.testing.assert_allclose(np.asarray(g), r, atol=1e-4, rtol=0)


def test_packed_group_equals_unpacked_rows():
    """A GRPO group packed as [prompt | resp_1 | resp_2 | resp_3] (shared prefix) gives every
    response token the output and gradients of the unpacked row [prompt | resp_g]."""
    P, lens, N, K, H = 40, (13, 21, 7), 4, 2, 64
    W = P + sum(lens)
    ks = jax.random.split(jax.random.key(5), 4)
    q = jax.random.normal(ks[0], (1, W, N, H))
    k, v = (jax.random.normal(x, (1, W, K, H)) for x in ks[1:3])
    ct = jax.random.normal(ks[3], (1, W, N, H))
    seg = np.ones(W, np.int32)
    w = P
    for g, n in enumerate(lens):
        seg[w : w + n] = 2 + g
        w += n
    seg = jnp.asarray(seg[None])

    def attn(q, k, v):
        return blockwise_attention(
            q, k, v, q_segment_ids_BT=seg, kv_segment_ids_BS=seg, shared_prefix_segment=1, block_q=16, block_k=16
        )

    out, (dq, dk, dv) = jax.jit(lambda *a: out_and_grads(attn, a, ct))(q, k, v)
    w = P
    dk_sum, dv_sum = jnp.zeros_like(dk[:, :P]), jnp.zeros_like(dv[:, :P])
    for n in lens:
        idx = np.r_[0:P, w : w + n]

        def un(q, k, v):
            return blockwise_attention(q, k, v, block_q=16, block_k=16)

        # The unpacked row's prompt rows carry no cotangent (in the packed row they are shared):
        # the response rows alone give the response gradients and their share of the prompt's.
        ct_u = ct[:, idx].at[:, :P].set(0.0)
        o_u, (dq_u, dk_u, dv_u) = jax.jit(lambda *a: out_and_grads(un, a, ct_u))(  # noqa: B023 - traced here
            q[:, idx], k[:, idx], v[:, idx]
        )
        np.testing.assert_allclose(out[:, w : w + n], o_u[:, P:], atol=1e-5, rtol=0)
        np.testing.assert_allclose(dq[:, w : w + n], dq_u[:, P:], atol=1e-4, rtol=0)
        np.testing.assert_allclose(dk[:, w : w + n], dk_u[:, P:], atol=1e-4, rtol=0)
        np.testing.assert_allclose(dv[:, w : w + n], dv_u[:, P:], atol=1e-4, rtol=0)
        dk_sum, dv_sum = dk_sum + dk_u[:, :P], dv_sum + dv_u[:, :P]
        w += n
    # The prompt's kv gradients: its own causal part (prompt rows) plus every response's share.
    o_p, (_, dk_p, dv_p) = jax.jit(lambda *a: out_and_grads(un, a, ct[:, :P]))(q[:, :P], k[:, :P], v[:, :P])
    np.testing.assert_allclose(dk[:, :P], dk_sum + dk_p, atol=1e-4, rtol=0)
    np.testing.assert_allclose(dv[:, :P], dv_sum + dv_p, atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout,pad", [("prefix", False), ("prefix", True), ("packed", True)])
def test_schedule_is_the_block_schedule(layout, pad):
    """The kernel runs, per q block, exactly the kv blocks `block_schedule` marks (in ascending
    order): for the contiguous layouts those are the blocks with a visible pair."""
    B, T, bq, bk = 2, 192, 32, 32
    seg = segment_ids(layout, B, T, pad=pad)
    spec = MaskSpec(
        causal=True, q_len=T, kv_len=T, has_segments=True, shared_prefix_segment=1 if layout == "prefix" else None
    )
    static = BlockwiseStatic(mask=spec, sm_scale=1.0, block_q=bq, block_k=bk)
    z = jnp.zeros((B, T, 2, 8))
    _, _, _, q_seg, kv_seg = _pad(static, z, z[:, :, :1], z[:, :, :1], seg, seg)
    order, count = (np.asarray(x) for x in schedule(static, B, q_seg, kv_seg))
    for b in range(B):
        sched = block_schedule(spec, bq, bk, np.asarray(seg[b]), np.asarray(seg[b]))
        np.testing.assert_array_equal(count[b], sched.sum(1))
        for i in range(sched.shape[0]):
            np.testing.assert_array_equal(order[b, i, : count[b, i]], np.flatnonzero(sched[i]))
    assert count.sum() < B * (T // bq) * (T // bq + 1) // 2  # fewer than causal alone


def _compiled(T: int):
    q = jax.ShapeDtypeStruct((1, T, 4, 64), jnp.float32)
    kv = jax.ShapeDtypeStruct((1, T, 2, 64), jnp.float32)
    seg = jax.ShapeDtypeStruct((1, T), jnp.int32)

    def fwd_bwd(q, k, v, seg):
        def attn(q, k, v):
            return blockwise_attention(q, k, v, q_segment_ids_BT=seg, kv_segment_ids_BS=seg, shared_prefix_segment=1)

        return out_and_grads(attn, (q, k, v), jnp.ones(q.shape, q.dtype))

    return jax.jit(fwd_bwd).lower(q, kv, kv, seg).compile()


def test_memory_is_linear_and_blocks_are_matmuls():
    """No [T, S] buffer: XLA's compiled temporaries grow ~linearly in T (x4 tokens: < x5 memory,
    where a score matrix would give x16); the block products are dot ops in the optimized HLO
    (real matmuls on CPU, not reduce loops): 2 forward, 5 backward."""
    small, big = _compiled(2048), _compiled(8192)
    m_small, m_big = small.memory_analysis(), big.memory_analysis()
    assert m_big.temp_size_in_bytes < 5 * m_small.temp_size_in_bytes
    assert m_big.temp_size_in_bytes < 8192 * 8192 * 4  # less than ONE f32 [T, T] matrix
    hlo = big.as_text()
    assert hlo.count(" dot(") == 7, hlo.count(" dot(")
    assert "f32[8192,8192]" not in hlo


def test_input_validation():
    q, k = jnp.zeros((1, 8, 3, 16)), jnp.zeros((1, 8, 2, 16))
    with pytest.raises(ValueError, match="multiple of kv heads"):
        blockwise_attention(q, k, k)
    q = jnp.zeros((1, 8, 4, 16))
    with pytest.raises(ValueError, match="needs segment ids"):
        blockwise_attention(q, k, k, shared_prefix_segment=1)
    with pytest.raises(ValueError, match="block_q=12"):
        blockwise_attention(q, k, k, block_q=12)
