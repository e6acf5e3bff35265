"""Strategies draw from the intended distribution (chi-square over thousands of draws), their
filters keep exactly the tokens transformers' logits warpers keep, and logprobs are taken under
the unfiltered temperature-scaled distribution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwenlong_jax import sampling

LOGITS_V = np.array([2.0, 1.6, 1.1, 0.7, 0.2, -0.4, -1.0, -2.5], np.float32)
DRAWS = 8000
# Upper 0.001 quantiles of the chi-square distribution, chi2.ppf(0.999, df) for df = 1..7
# (standard tables). A correct sampler fails a test with probability 0.001 per check; the
# draws use fixed keys, so a run is deterministic anyway.
CHI2_CRIT_999 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515, 6: 22.458, 7: 24.322}


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def expected_probs(temperature, top_k=0, top_p=1.0, min_p=0.0):
    """Hand-written numpy version of HF's order: temperature, top-k, top-p, min-p."""
    p = softmax(LOGITS_V.astype(np.float64) / temperature)
    keep = np.ones_like(p, bool)
    if top_k:
        keep &= p >= np.sort(p)[-top_k]
    if top_p < 1:
        q = np.where(keep, p, 0) / np.where(keep, p, 0).sum()
        order = np.argsort(-q)
        before = np.cumsum(q[order]) - q[order]
        keep[order[before >= top_p]] = False
    if min_p:
        q = np.where(keep, p, 0)
        keep &= q >= min_p * q.max()
    out = np.where(keep, p, 0)
    return out / out.sum()


def draw(strategy, n=DRAWS, seed=0):
    keys = jax.random.split(jax.random.key(seed), n)
    logits = jnp.broadcast_to(jnp.asarray(LOGITS_V), (n, LOGITS_V.size))
    tokens, logprobs = jax.jit(sampling.sample_tokens, static_argnums=0)(strategy, logits, keys)
    return np.asarray(tokens), np.asarray(logprobs)


def chi2(counts, probs):
    kept = probs > 0
    exp = probs[kept] * counts.sum()
    return float(((counts[kept] - exp) ** 2 / exp).sum()), int(kept.sum()) - 1


CASES = [
    (sampling.Temperature(0.7), dict(temperature=0.7)),
    (sampling.Temperature(1.5), dict(temperature=1.5)),
    (sampling.TopK(3, temperature=1.0), dict(temperature=1.0, top_k=3)),
    (sampling.TopP(0.8, temperature=1.0), dict(temperature=1.0, top_p=0.8)),
    (sampling.MinP(0.2, temperature=0.9), dict(temperature=0.9, min_p=0.2)),
    (
        sampling.SamplingParams(1.2, top_p=0.9, top_k=5, min_p=0.05),
        dict(temperature=1.2, top_k=5, top_p=0.9, min_p=0.05),
    ),
]


@pytest.mark.parametrize("strategy,spec", CASES, ids=lambda x: repr(x) if not isinstance(x, dict) else "")
def test_draws_follow_the_intended_distribution(strategy, spec):
    probs = expected_probs(**spec)
    tokens, logprobs = draw(strategy)
    counts = np.bincount(tokens, minlength=LOGITS_V.size)
    assert counts[probs == 0].sum() == 0, f"drew filtered tokens: {counts} vs {probs}"
    stat, df = chi2(counts, probs)
    assert df >= 1 and stat < CHI2_CRIT_999[df], (stat, df, counts, probs)
    # Power: the same statistic against the unfiltered T=1 distribution is far beyond the
    # critical value, so this test can tell the distributions apart.
    wrong = softmax(LOGITS_V.astype(np.float64))
    wrong_stat = float(((counts - wrong * DRAWS) ** 2 / (wrong * DRAWS)).sum())
    assert wrong_stat > CHI2_CRIT_999[LOGITS_V.size - 1]
    # Logprob: log_softmax(logits / T) of the drawn token, NOT renormalised over the kept set.
    unfiltered = np.log(softmax(LOGITS_V.astype(np.float64) / spec["temperature"]))
    np.testing.assert_allclose(logprobs, unfiltered[tokens], atol=1e-5)


def test_greedy_is_argmax_with_plain_log_softmax():
    tokens, logprobs = draw(sampling.Greedy(), n=4)
    assert (tokens == 0).all()
    np.testing.assert_allclose(logprobs, np.log(softmax(LOGITS_V.astype(np.float64)))[0], atol=1e-6)
    assert sampling.from_flags(0.0, top_p=0.5) == sampling.Greedy()
    assert sampling.from_flags(0.8, 0.9, 4, 0.1) == sampling.SamplingParams(0.8, 0.9, 4, 0.1)


@pytest.mark.parametrize(
    "ours,hf_name,arg",
    [
        (sampling.TopK(7), "TopKLogitsWarper", 7),
        (sampling.TopP(0.75), "TopPLogitsWarper", 0.75),
        (sampling.TopP(0.3), "TopPLogitsWarper", 0.3),
        (sampling.MinP(0.1), "MinPLogitsWarper", 0.1),
    ],
)
def test_filters_keep_what_transformers_keeps(ours, hf_name, arg):
    import torch
    from transformers.generation import logits_process

    logits = np.random.default_rng(0).normal(0, 2, size=(32, 50)).astype(np.float32)
    hf = getattr(logits_process, hf_name)(arg)(None, torch.tensor(logits)).numpy()
    mine = np.asarray(ours.filter(jnp.asarray(logits)))
    np.testing.assert_array_equal(np.isfinite(mine), np.isfinite(hf))
    np.testing.assert_array_equal(mine[np.isfinite(mine)], logits[np.isfinite(mine)])


def test_rows_are_independent_of_batch_layout():
    keys = jax.random.split(jax.random.key(3), 3)
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32))
    s = sampling.Temperature(1.0)
    all3, _ = sampling.sample_tokens(s, logits, keys)
    for i in range(3):
        one, _ = sampling.sample_tokens(s, logits[i : i + 1], keys[i : i + 1])
        assert int(one[0]) == int(all3[i])


@pytest.mark.parametrize(
    "make,msg",
    [
        (lambda: sampling.TopP(0.0), "top_p must be in"),
        (lambda: sampling.TopK(0), "top_k must be a positive int"),
        (lambda: sampling.MinP(1.5), "min_p must be in"),
        (lambda: sampling.Temperature(0.0), "temperature must be > 0"),
        (lambda: sampling.SamplingParams(-1.0), "temperature must be >= 0"),
        (lambda: sampling.SamplingParams(1.0, top_p=2.0), "top_p must be in"),
    ],
)
def test_bad_parameters_are_refused(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()
