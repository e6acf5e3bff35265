"""Prefix-shared decode attention (interpret mode on CPU, compiled on a GPU or TPU) against its
reference and full attention.

Tolerances (max abs error, inputs ~N(0,1)): f32 1e-5; bf16 inputs vs the f32 reference on the
same bf16-rounded values 3e-2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import jaxprs_in_params

from kernels.decode import decode_attention, decode_block_size, reference_decode_attention
from kernels.reference import reference_attention
from tests.kernel_cases import INTERPRET, KERNELS_HERE

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def make_inputs(B, G, T, N, K, H, S, R, prefix_len, resp_len, dtype=jnp.float32, seed=0):
    ks = jax.random.split(jax.random.key(seed), 5)
    q = jax.random.normal(ks[0], (B, G, T, N, H)).astype(dtype)
    pk, pv = (jax.random.normal(x, (B, S, K, H)).astype(dtype) for x in ks[1:3])
    rk, rv = (jax.random.normal(x, (B, G, R, K, H)).astype(dtype) for x in ks[3:5])
    return (q, pk, pv, jnp.asarray(prefix_len, jnp.int32), rk, rv, jnp.asarray(resp_len, jnp.int32))


CASES = {
    # several splits of several blocks each (S=300, block 16 -> 19 blocks -> 10 splits of 2),
    # prompt lengths not block multiples, one prompt shorter than its cache, GQA 4, one token
    "one-token": dict(
        B=2, G=4, T=1, N=8, K=2, H=64, S=300, R=40, prefix_len=[300, 131], resp_len=[[1, 17, 40, 33], [5, 9, 3, 16]]
    ),
    # T=3 new tokens (speculative / chunked), head dim 128, no GQA
    "three-tokens": dict(B=1, G=2, T=3, N=2, K=2, H=128, S=90, R=24, prefix_len=[77], resp_len=[[3, 24]]),
}


@pytest.mark.parametrize("kernel", KERNELS_HERE)
@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_matches_references(name, kernel):
    """Both kernel shapes in interpret mode on CPU; on a GPU or TPU its own, compiled."""
    c = CASES[name]
    args = make_inputs(**c)
    out = jax.jit(
        lambda *a: decode_attention(*a, block_s=16, interpret=INTERPRET, kernel=kernel), compiler_options=FAST_COMPILE
    )(*args)
    ref, copied = jax.jit(lambda *a: (reference_decode_attention(*a), materialised_attention(*a)))(*args)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out, copied, atol=1e-5, rtol=0)


def test_triton_padding_matches_references():
    """For a GPU target the loop kernel pads its query rows and length vectors to powers of two
    (Triton's rule; 40 query heads over 8 kv heads give 5 rows per kv head). The padded program,
    run in interpret mode on CPU (compiled by Triton on a GPU), equals both references: B=3
    prompts, G=3 samples, Q=5."""
    from kernels import backend

    c = dict(
        B=3,
        G=3,
        T=1,
        N=10,
        K=2,
        H=32,
        S=70,
        R=20,
        prefix_len=[70, 33, 1],
        resp_len=[[1, 7, 20], [4, 11, 2], [20, 1, 9]],
    )
    args = make_inputs(**c)
    with backend.use_target("gpu"):
        out = jax.jit(
            lambda *a: decode_attention(*a, block_s=16, interpret=INTERPRET, kernel="loop"),
            compiler_options=FAST_COMPILE,
        )(*args)
    ref, copied = jax.jit(lambda *a: (reference_decode_attention(*a), materialised_attention(*a)))(*args)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out, copied, atol=1e-5, rtol=0)


def materialised_attention(q, pk, pv, prefix_len, rk, rv, resp_len):
    """reference_attention over an explicit [prompt | own response] copy per sample.

    Each sample's keys are [prompt cache | response cache rolled so its valid entries end last];
    invalid slots get segment 0, so the new tokens are the last T keys as reference_attention's
    causal rule expects. All B*G samples are one batch (fixed shapes, one compile).
    """
    B, G, T, N, H = q.shape
    S, R = pk.shape[1], rk.shape[2]
    shift = (jnp.arange(R)[None, None, :] + resp_len[:, :, None]) % R  # valid entries end last

    def roll(x):
        return jnp.take_along_axis(x, shift[..., None, None], axis=2)

    k = jnp.concatenate([jnp.broadcast_to(pk[:, None], (B, G, S) + pk.shape[2:]), roll(rk)], 2)
    v = jnp.concatenate([jnp.broadcast_to(pv[:, None], (B, G, S) + pv.shape[2:]), roll(rv)], 2)
    valid = jnp.concatenate(
        [
            jnp.broadcast_to(jnp.arange(S)[None, None, :] < prefix_len[:, None, None], (B, G, S)),
            jnp.arange(R)[None, None, :] >= R - resp_len[:, :, None],
        ],
        axis=2,
    ).astype(jnp.int32)

    def flat(x):
        return x.reshape(B * G, *x.shape[2:])

    out = reference_attention(
        flat(q),
        flat(k),
        flat(v),
        causal=True,
        q_segment_ids_BT=jnp.ones((B * G, T), jnp.int32),
        kv_segment_ids_BS=flat(valid),
    )
    return out.reshape(q.shape)


def test_decode_bf16():
    c = CASES["one-token"]
    args = make_inputs(**c, dtype=jnp.bfloat16)
    decode = jax.jit(lambda *a: decode_attention(*a, block_s=32, interpret=INTERPRET), compiler_options=FAST_COMPILE)
    out = decode(*args)
    assert out.dtype == jnp.bfloat16
    f32 = [x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x for x in args]
    np.testing.assert_allclose(out.astype(jnp.float32), jax.jit(reference_decode_attention)(*f32), atol=3e-2, rtol=0)


def test_prompt_cache_is_never_copied_per_sample():
    """No value in the computation is as large as G copies of the prompt cache."""
    c = dict(CASES["one-token"], G=8, S=512, resp_len=np.full((2, 8), 20))
    args = make_inputs(**c)
    jaxpr = jax.make_jaxpr(lambda *a: decode_attention(*a, block_s=16, interpret=True))(*args)
    prompt_cache = args[1].size
    largest = 0

    def visit(jx):
        nonlocal largest
        for eqn in jx.eqns:
            for var in eqn.outvars:
                largest = max(largest, int(np.prod(getattr(var.aval, "shape", ()))))
            for sub in jaxprs_in_params(eqn.params):
                visit(sub)

    visit(jaxpr.jaxpr)
    assert largest < 2 * prompt_cache, (largest, prompt_cache)
    # The reference materialises [B, G, T, K, Q, S] scores; sanity-check the measure sees it.
    ref = jax.make_jaxpr(reference_decode_attention)(*args)
    assert (
        max(int(np.prod(getattr(v.aval, "shape", ()))) for e in ref.jaxpr.eqns for v in e.outvars)
        >= c["G"] * c["S"] * c["N"] * c["B"]
    )


def test_decode_validation():
    args = make_inputs(**CASES["three-tokens"])
    with pytest.raises(ValueError, match="block_s=12"):
        decode_block_size(12, "cpu")
    with pytest.raises(ValueError, match="resp_len_BG"):
        decode_attention(*args[:6], args[6][:, :1])
    with pytest.raises(ValueError, match="response cache length"):
        decode_attention(*args[:4], args[4][:, :, :2], args[5][:, :, :2], args[6])


def test_lowers_for_gpu(monkeypatch):
    """Both decode kernels lower to Triton for GPU from this CPU machine (lowering only; TPU
    would need a [B, K, S, H] cache layout, see kernels/decode.py)."""
    import kernels.backend

    monkeypatch.setattr(kernels.backend, "target_backend", lambda: "gpu")
    B, G, T, N, K, H, S, R = 2, 4, 1, 8, 2, 64, 512, 128
    shapes = [
        ((B, G, T, N, H), jnp.bfloat16),
        ((B, S, K, H), jnp.bfloat16),
        ((B, S, K, H), jnp.bfloat16),
        ((B,), jnp.int32),
        ((B, G, R, K, H), jnp.bfloat16),
        ((B, G, R, K, H), jnp.bfloat16),
        ((B, G), jnp.int32),
    ]
    args = [jax.ShapeDtypeStruct(s, d) for s, d in shapes]
    hlo = (
        jax.jit(lambda *a: decode_attention(*a, block_s=64)).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
    )
    assert hlo.count("custom_call @__gpu$xla.gpu.triton") == 2
