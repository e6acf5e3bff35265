"""KL penalty estimators and entropy/logprob helpers: hand values, verl parity, chunking."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from qwenlong_jax import rl


# ---- Transcriptions of verl (torch), statement for statement ----
def verl_kl_penalty(logprob, ref_logprob, kl_penalty):
    """verl/trainer/ppo/core_algos.py::kl_penalty."""
    if kl_penalty in ("kl", "k1"):
        return logprob - ref_logprob
    if kl_penalty == "abs":
        return (logprob - ref_logprob).abs()
    if kl_penalty in ("mse", "k2"):
        return 0.5 * (logprob - ref_logprob).square()
    if kl_penalty in ("low_var_kl", "k3"):
        kl = ref_logprob - logprob
        kl = torch.clamp(kl, min=-20, max=20)
        ratio = torch.exp(kl)
        kld = (ratio - kl - 1).contiguous()
        return torch.clamp(kld, min=-10, max=10)
    raise NotImplementedError


def verl_entropy_from_logits(logits):
    """verl/utils/torch_functional.py::entropy_from_logits (logits already / temperature)."""
    pd = torch.nn.functional.softmax(logits, dim=-1)
    entropy = torch.logsumexp(logits, dim=-1) - torch.sum(pd * logits, dim=-1)
    return entropy


# ---- KL ----
def test_kl_hand_values():
    # d = logp - ref = [0.5, -1]; k = ref - logp = [-0.5, 1].
    # kl = d; abs = |d| = [.5, 1]; mse = d^2 / 2 = [.125, .5];
    # low_var_kl = exp(k) - k - 1 = [0.6065307 + 0.5 - 1, 2.7182818 - 1 - 1]
    #            = [0.1065307, 0.7182818].
    logp = jnp.array([0.0, -2.0])
    ref = jnp.array([-0.5, -1.0])
    np.testing.assert_allclose(rl.kl_penalty(logp, ref, "kl"), [0.5, -1.0])
    np.testing.assert_allclose(rl.kl_penalty(logp, ref, "abs"), [0.5, 1.0])
    np.testing.assert_allclose(rl.kl_penalty(logp, ref, "mse"), [0.125, 0.5])
    np.testing.assert_allclose(rl.kl_penalty(logp, ref, "low_var_kl"), [0.1065307, 0.7182818], rtol=1e-6)
    for alias, kind in (("k1", "kl"), ("k2", "mse"), ("k3", "low_var_kl")):
        np.testing.assert_array_equal(rl.kl_penalty(logp, ref, alias), rl.kl_penalty(logp, ref, kind))


def test_low_var_kl_clamps():
    # k = ref - logp = 30 -> clamped to 20 -> exp(20) - 21 -> capped at 10.
    # k = -30 -> clamped to -20 -> exp(-20) + 20 - 1 = 19.000000002 -> capped at 10.
    # k = +inf (logp = -inf): clamp keeps it finite -> 10, no NaN.
    logp = jnp.array([-30.0, 0.0, -jnp.inf])
    ref = jnp.array([0.0, -30.0, 0.0])
    np.testing.assert_array_equal(rl.kl_penalty(logp, ref, "low_var_kl"), [10.0, 10.0, 10.0])


def test_low_var_kl_gradient():
    # d/d logp (exp(k) - k - 1) with k = ref - logp: (exp(k) - 1) * dk/dlogp = 1 - exp(k).
    # At k = 1: 1 - e = -1.7182818; beyond the cap (k = 30) the gradient is 0.
    g = jax.grad(lambda lp: jnp.sum(rl.kl_penalty(lp, jnp.array([0.0, 0.0]), "low_var_kl")))(jnp.array([-1.0, -30.0]))
    np.testing.assert_allclose(g, [1 - math.e, 0.0], rtol=1e-6)


@pytest.mark.parametrize("kind", ["kl", "abs", "mse", "low_var_kl"])
def test_kl_matches_verl_transcription(kind):
    rng = np.random.default_rng(0)
    logp = rng.normal(-2, 2, (6, 50)).astype(np.float32)
    ref = (logp + rng.normal(0, 3, (6, 50))).astype(np.float32)  # some k beyond the caps
    ref[0, :5] = logp[0, :5] + 25.0
    ours = rl.kl_penalty(jnp.asarray(logp), jnp.asarray(ref), kind)
    want = verl_kl_penalty(torch.tensor(logp), torch.tensor(ref), kind).numpy()
    np.testing.assert_allclose(ours, want, rtol=1e-6, atol=1e-6)


def test_kl_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        rl.kl_penalty(jnp.zeros(2), jnp.zeros(2), "full")
    with pytest.raises(ValueError, match="one shape"):
        rl.kl_penalty(jnp.zeros(2), jnp.zeros(3), "kl")


# ---- entropy / logprobs ----
def test_entropy_hand_values():
    # Uniform over V = 8: log 8 = 2.0794415.
    np.testing.assert_allclose(rl.entropy_from_logits(jnp.zeros((8,))), math.log(8), rtol=1e-6)
    # logits [0, ln 3]: p = [1/4, 3/4], H = -(.25 ln .25 + .75 ln .75) = 0.5623351.
    # At temperature 0.5 the logits double: [0, 2 ln 3] -> p = [1/10, 9/10],
    # H = -(.1 ln .1 + .9 ln .9) = 0.3250830.
    logits = jnp.array([0.0, math.log(3)])
    np.testing.assert_allclose(rl.entropy_from_logits(logits), 0.5623351, rtol=1e-6)
    np.testing.assert_allclose(rl.entropy_from_logits(logits, 0.5), 0.3250830, rtol=1e-6)
    # Large logits: no cancellation (lse and sum(p * z) would both be ~1e4).
    np.testing.assert_allclose(rl.entropy_from_logits(logits + 1e4), 0.5623351, rtol=1e-5)


def test_entropy_with_masked_vocab_is_finite_with_finite_grad():
    # [0, 0, -inf, -inf]: two equally likely tokens -> H = ln 2; the -inf entries add 0.
    logits = jnp.array([0.0, 0.0, -jnp.inf, -jnp.inf])
    np.testing.assert_allclose(rl.entropy_from_logits(logits), math.log(2), rtol=1e-6)
    g = jax.grad(lambda z: rl.entropy_from_logits(z))(logits)
    assert np.isfinite(np.asarray(g)).all()
    # dH/dz_i = -p_i (log p_i + H): at p = 1/2 each, -1/2 (-ln 2 + ln 2) = 0.
    np.testing.assert_allclose(g, 0.0, atol=1e-7)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_and_entropy_match_torch(temperature):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, (3, 5, 97)).astype(np.float32)
    targets = rng.integers(0, 97, (3, 5))
    logp, ent = rl.logprobs_and_entropy_from_logits(jnp.asarray(logits), jnp.asarray(targets), temperature)
    # verl's actor: logits.div_(temperature), then log_softmax gather and entropy_from_logits.
    scaled = torch.tensor(logits) / temperature
    want_logp = torch.gather(torch.log_softmax(scaled, -1), -1, torch.tensor(targets)[..., None])[..., 0].numpy()
    want_ent = verl_entropy_from_logits(scaled).numpy()
    exact_ent = verl_entropy_from_logits(scaled.double()).numpy()  # float64 ground truth
    np.testing.assert_allclose(logp, want_logp, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ent, exact_ent, rtol=1e-5, atol=1e-6)
    # verl's float32 lse - sum(p z) cancels (lse ~ 12 here): agreement to its round-off only,
    # and ours is the closer of the two to float64.
    np.testing.assert_allclose(ent, want_ent, atol=1e-5)
    assert np.abs(ent - exact_ent).max() <= np.abs(want_ent - exact_ent).max()
    np.testing.assert_allclose(rl.entropy_from_logits(jnp.asarray(logits), temperature), ent, rtol=1e-7)


def test_entropy_errors():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        rl.entropy_from_logits(jnp.zeros(3), 0.0)
    with pytest.raises(ValueError, match="need targets of shape"):
        rl.logprobs_and_entropy_from_logits(jnp.zeros((2, 3)), jnp.zeros((3,), jnp.int32))


# ---- chunked over T ----
def _head(params, h_CD):
    return h_CD @ params["w_DV"] + params["b_V"][None, :]


def _chunk_case(t=37, d=16, v=64):
    rng = np.random.default_rng(2)
    params = {
        "w_DV": jnp.asarray(rng.normal(0, 0.5, (d, v)), jnp.float32),
        "b_V": jnp.asarray(rng.normal(0, 0.1, (v,)), jnp.float32),
    }
    hidden = jnp.asarray(rng.normal(0, 1, (t, d)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, v, (t,)), jnp.int32)
    return params, hidden, targets


@pytest.mark.parametrize("chunk_size", [8, 37, 1000])  # ragged tail, exact, larger than T
def test_chunked_equals_unchunked_values_and_grads(chunk_size):
    params, hidden, targets = _chunk_case()

    def objective(fn, p, h):
        logp, ent = fn(p, h)
        return jnp.sum(logp * jnp.linspace(0.5, 1.5, logp.shape[0])) + 0.1 * jnp.sum(ent)

    def full(p, h):
        return rl.logprobs_and_entropy_from_logits(_head(p, h), targets, 0.7)

    def chunked(p, h):
        return rl.chunked_logprobs_and_entropy(_head, p, h, targets, 0.7, chunk_size)

    for a, b in zip(jax.jit(full)(params, hidden), jax.jit(chunked)(params, hidden)):
        assert a.shape == b.shape == (37,)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    g_full = jax.jit(jax.grad(lambda p, h: objective(full, p, h), argnums=(0, 1)))(params, hidden)
    g_chunk = jax.jit(jax.grad(lambda p, h: objective(chunked, p, h), argnums=(0, 1)))(params, hidden)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_chunk)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_never_materialises_full_logits():
    # Compiled temp memory of value-and-grad. Unchunked: several [T, V] float32 buffers, growing
    # with T. Chunked: a few [chunk, V] buffers, flat in T (measured: ~4.1 chunk buffers at both
    # T = 512 and T = 1024, against ~5 full [T, V] buffers for the unchunked path).
    d, v, chunk = 8, 512, 32

    def temp_bytes(t, chunked):
        params, hidden, targets = _chunk_case(t, d, v)
        if chunked:

            def fn(p, h):
                return rl.chunked_logprobs_and_entropy(_head, p, h, targets, 1.0, chunk)
        else:

            def fn(p, h):
                return rl.logprobs_and_entropy_from_logits(_head(p, h), targets)

        def loss(p, h):
            logp, ent = fn(p, h)
            return jnp.sum(logp) + jnp.sum(ent)

        compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(params, hidden).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    chunk_v_bytes = chunk * v * 4
    for t in (512, 1024):
        assert temp_bytes(t, chunked=False) >= t * v * 4
    small, large = temp_bytes(512, chunked=True), temp_bytes(1024, chunked=True)
    assert large < 8 * chunk_v_bytes, (large, chunk_v_bytes)
    # Doubling T adds only O(T * D) (hidden grads, outputs), far below one extra [512, V].
    assert large - small < 512 * v * 4 // 16, (small, large)
