"""Continuous batching gives the lockstep sampler's samples token for token, with fewer steps."""

import jax
import numpy as np

from qwenlong_jax import models, sampling
from qwenlong_jax.sampling import continuous, sample_refill, strategies

CFG = models.get_model_config("tiny", vocab_size=64, num_layers=2)
PARAMS = jax.jit(models.init_params, static_argnums=(0, 2))(CFG, jax.random.key(0), 0.2)
EOS = (3, 7, 11, 19)  # several end tokens so the samples' lengths spread


def _prompts(P, S, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(20, 64, size=int(n)).tolist() for n in rng.integers(5, S + 1, size=P)]


def test_continuous_equals_lockstep_token_for_token():
    P, G, R, S = 7, 3, 14, 16
    tokens, lens = sampling.pad_prompts(_prompts(P, S), S)
    keys = sampling.sample_keys(5, np.arange(P), G)
    strategy = strategies.SamplingParams(1.0, top_k=40)
    ref = sampling.sample_groups(
        CFG, PARAMS, tokens, lens, keys, max_new_tokens=R, strategy=strategy, eos_ids=EOS, prefill_chunk=8
    )
    out = continuous.sample_continuous(
        CFG,
        PARAMS,
        tokens,
        lens,
        keys,
        slots=2,
        max_new_tokens=R,
        strategy=strategy,
        eos_ids=EOS,
        prefill_chunk=8,
        chunk=3,
    )
    np.testing.assert_array_equal(out.lengths_PG, np.asarray(ref.lengths_BG))
    np.testing.assert_array_equal(out.tokens_PGR, np.asarray(ref.tokens_BGR))
    np.testing.assert_array_equal(out.finish_PG, np.asarray(ref.finish_BG))
    np.testing.assert_allclose(out.logprobs_PGR, np.asarray(ref.logprobs_BGR), atol=1e-5)
    lengths = np.asarray(ref.lengths_BG)
    assert len(set(lengths.ravel().tolist())) > 2  # the test exercises different lengths
    # every computed sample-step is accounted: at least the kept tokens, at most slots x G x
    # (steps) + G per prefill
    assert lengths.sum() <= out.token_steps <= out.decode_steps * 2 * G + P * G


def test_stop_sequences_and_greedy_match_lockstep():
    P, G, R, S = 4, 2, 10, 12
    tokens, lens = sampling.pad_prompts(_prompts(P, S, seed=1), S)
    keys = sampling.sample_keys(0, np.arange(P), G)
    kw = dict(
        max_new_tokens=R,
        strategy=strategies.Temperature(1.5),
        eos_ids=(3,),
        stop_sequences=((40, 41), (50,)),
        prefill_chunk=16,
    )
    ref = sampling.sample_groups(CFG, PARAMS, tokens, lens, keys, **kw)
    out = continuous.sample_continuous(CFG, PARAMS, tokens, lens, keys, slots=3, chunk=4, **kw)
    np.testing.assert_array_equal(out.tokens_PGR, np.asarray(ref.tokens_BGR))
    np.testing.assert_array_equal(out.finish_PG, np.asarray(ref.finish_BG))


def test_sample_refill_equals_lockstep_token_for_token():
    """Decode rows decoupled from prompt caches: a finished block of rows takes the next samples
    (of whichever prompt is next); blocks of 1 and of G rows, rows fewer than G, prompt slots
    fewer than the prompts."""
    P, G, R, S = 7, 3, 14, 16
    tokens, lens = sampling.pad_prompts(_prompts(P, S), S)
    keys = sampling.sample_keys(5, np.arange(P), G)
    strategy = strategies.SamplingParams(1.0, top_k=40)
    ref = sampling.sample_groups(
        CFG, PARAMS, tokens, lens, keys, max_new_tokens=R, strategy=strategy, eos_ids=EOS, prefill_chunk=8
    )
    lengths = np.asarray(ref.lengths_BG)
    for rows, block, prompt_slots, chunk in ((4, 1, 2, 3), (2, 1, 1, 1), (6, 3, 3, 2)):
        out = sample_refill.sample_refill(
            CFG,
            PARAMS,
            tokens,
            lens,
            keys,
            rows=rows,
            block=block,
            prompt_slots=prompt_slots,
            max_new_tokens=R,
            strategy=strategy,
            eos_ids=EOS,
            prefill_chunk=8,
            chunk=chunk,
        )
        np.testing.assert_array_equal(out.lengths_PG, lengths)
        np.testing.assert_array_equal(out.tokens_PGR, np.asarray(ref.tokens_BGR))
        np.testing.assert_array_equal(out.finish_PG, np.asarray(ref.finish_BG))
        np.testing.assert_allclose(out.logprobs_PGR, np.asarray(ref.logprobs_BGR), atol=1e-5)
        # computed sample-steps: at least the kept tokens, at most rows x steps + one per sample
        assert lengths.sum() <= out.token_steps <= out.decode_steps * rows + P * G
    assert len(set(lengths.ravel().tolist())) > 2


def test_sample_refill_stop_sequences_match_lockstep():
    P, G, R, S = 4, 2, 10, 12
    tokens, lens = sampling.pad_prompts(_prompts(P, S, seed=1), S)
    keys = sampling.sample_keys(0, np.arange(P), G)
    kw = dict(
        max_new_tokens=R,
        strategy=strategies.Temperature(1.5),
        eos_ids=(3,),
        stop_sequences=((40, 41), (50,)),
        prefill_chunk=16,
    )
    ref = sampling.sample_groups(CFG, PARAMS, tokens, lens, keys, **kw)
    out = sample_refill.sample_refill(CFG, PARAMS, tokens, lens, keys, rows=4, block=2, prompt_slots=2, chunk=2, **kw)
    np.testing.assert_array_equal(out.tokens_PGR, np.asarray(ref.tokens_BGR))
    np.testing.assert_array_equal(out.finish_PG, np.asarray(ref.finish_BG))


def test_group_refill_drain_and_chunk_ends_keep_the_samples():
    """The drain packs the busy slots into fewer rows and a chunk ends when a slot frees: same
    samples as lockstep, with fewer sample-steps than keeping every slot to the end."""
    P, G, R, S = 7, 3, 14, 16
    tokens, lens = sampling.pad_prompts(_prompts(P, S), S)
    keys = sampling.sample_keys(5, np.arange(P), G)
    kw = dict(max_new_tokens=R, strategy=strategies.SamplingParams(1.0, top_k=40), eos_ids=EOS, prefill_chunk=8)
    ref = sampling.sample_groups(CFG, PARAMS, tokens, lens, keys, **kw)
    run = lambda **o: continuous.sample_continuous(CFG, PARAMS, tokens, lens, keys, slots=4, **kw, **o)  # noqa: E731
    packed, stepwise, full = run(chunk=50), run(chunk=1), run(chunk=50, drain=False)
    for out in (packed, stepwise, full):
        np.testing.assert_array_equal(out.tokens_PGR, np.asarray(ref.tokens_BGR))
        np.testing.assert_array_equal(out.lengths_PG, np.asarray(ref.lengths_BG))
        np.testing.assert_array_equal(out.finish_PG, np.asarray(ref.finish_BG))
    # chunk=50 > R: a chunk ends where a slot frees, exactly where one-step chunks refill or pack
    assert (packed.token_steps, packed.decode_steps) == (stepwise.token_steps, stepwise.decode_steps)
    assert packed.token_steps < full.token_steps


def test_samplers_by_name_same_rollout_samples():
    from qwenlong_jax.sampling import samplers

    P, G, R, S = 5, 2, 10, 16
    tokens, lens = sampling.pad_prompts(_prompts(P, S, seed=2), S)
    keys = sampling.sample_keys(1, np.arange(P), G)
    kw = dict(max_new_tokens=R, strategy=strategies.Temperature(1.0), eos_ids=EOS, prefill_chunk=8)
    outs = {
        name: samplers.sample(name, CFG, PARAMS, tokens, lens, keys, batch=b, **kw)
        for name, b in (("lockstep", 0), ("group_refill", 2))
    }
    a, b = outs["lockstep"], outs["group_refill"]
    np.testing.assert_array_equal(a.tokens_PGR, b.tokens_PGR)
    np.testing.assert_array_equal(a.finish_PG, b.finish_PG)
    np.testing.assert_allclose(a.logprobs_PGR, b.logprobs_PGR, atol=1e-5)
    assert a.token_steps == a.decode_steps * P * G  # one call: every sample steps to the longest
    assert a.lengths_PG.sum() <= b.token_steps
    try:
        samplers.sample("eager", CFG, PARAMS, tokens, lens, keys, batch=0, **kw)
    except ValueError as e:
        assert "lockstep, group_refill" in str(e)
    else:
        raise AssertionError("an unknown sampler name must raise")
