"""Group sampling: one prompt KV per prompt shared by its G samples, equal to copying the prompt
G times with the same keys; EOS / stop sequences end samples and the loop; generate() contract."""
import functools
import math

import jax
import numpy as np
import pytest

from qwenlong_jax import models, sampling

CFG = models.get_model_config("tiny", vocab_size=64, num_layers=2)  # K=2, H=32
PARAMS = models.init_params(CFG, jax.random.key(0), init_std=0.2)
LENGTHS, S, CHUNK, G, R = (40, 50), 64, 32, 4, 12
PROMPTS = [np.random.default_rng(5).integers(1, 64, size=n).tolist() for n in LENGTHS]
STRATEGY = sampling.SamplingParams(1.0, top_p=0.95)
SEED = 7


def _compile(tokens_BS, lens_B, keys_BG):
    """AOT-compiled sample_groups (its memory_analysis is checked; call it without CFG)."""
    return sampling.sample_groups.lower(CFG, PARAMS, tokens_BS, lens_B, keys_BG, max_new_tokens=R,
                                        strategy=STRATEGY, prefill_chunk=CHUNK).compile()


@functools.lru_cache(maxsize=None)
def shared_and_copied():
    B = len(PROMPTS)
    tokens, lens = sampling.pad_prompts(PROMPTS, S)
    keys_BG = sampling.sample_keys(SEED, np.arange(B), G)
    shared = _compile(tokens, lens, keys_BG)
    # The same samples as B*G one-sample prompts: prompt row b*G+g carries key (b, g).
    copied = _compile(np.repeat(tokens, G, 0), np.repeat(lens, G), keys_BG.reshape(B * G, 1))
    return (shared, jax.device_get(shared(PARAMS, tokens, lens, keys_BG)),
            copied, jax.device_get(copied(PARAMS, np.repeat(tokens, G, 0), np.repeat(lens, G),
                                          keys_BG.reshape(B * G, 1))))


def test_shared_prefix_equals_copied_prompts():
    _, out, _, ref = shared_and_copied()
    B = len(PROMPTS)
    np.testing.assert_array_equal(out.tokens_BGR, ref.tokens_BGR.reshape(B, G, R))
    np.testing.assert_allclose(out.logprobs_BGR, ref.logprobs_BGR.reshape(B, G, R), atol=1e-5)
    np.testing.assert_array_equal(out.lengths_BG, ref.lengths_BG.reshape(B, G))
    # The samples of a group really differ (else equality would be trivial).
    assert len({tuple(out.tokens_BGR[0, g]) for g in range(G)}) == G
    assert int(out.steps) == R and (out.finish_BG == 0).all()


def test_one_prompt_cache_per_prompt():
    B, L, K, H = len(PROMPTS), CFG.num_layers, CFG.num_kv_heads, CFG.head_dim
    tokens, lens = sampling.pad_prompts(PROMPTS, S)
    cache = jax.eval_shape(lambda t, l: sampling.prefill(CFG, PARAMS, t, l, chunk=CHUNK), tokens, lens)
    assert cache.k_LBSKH.shape == cache.v_LBSKH.shape == (L, B, S, K, H)
    state = jax.eval_shape(lambda: sampling.init_state(CFG, B, G, R, return_logits=False))
    assert state.resp_k_LBGRKH.shape == (L, B, G, R, K, H)
    prompt_bytes = 2 * L * B * S * K * H * 4
    assert cache.k_LBSKH.size * 4 + cache.v_LBSKH.size * 4 == prompt_bytes

    # No array anywhere in the program (loop bodies included) is as large as one layer's prompt
    # keys copied G times: [B, G, S, K, H] never exists.
    keys_BG = sampling.sample_keys(SEED, np.arange(B), G)
    run = functools.partial(sampling.sample_groups, CFG, max_new_tokens=R, strategy=STRATEGY,
                            prefill_chunk=CHUNK)
    jaxpr = jax.make_jaxpr(run)(PARAMS, tokens, lens, keys_BG)
    largest = max(_avals(jaxpr.jaxpr), key=lambda a: math.prod(a.shape))
    assert math.prod(largest.shape) < B * G * S * K * H, largest
    assert any(a.shape == (L, B, S, K, H) for a in _avals(jaxpr.jaxpr))  # the walk sees the cache

    # Compiled memory: G samples on shared caches need far less scratch than G prompt copies;
    # the difference is at least (G - 1) prompt caches' worth (minus the small response caches).
    shared, _, copied, _ = shared_and_copied()
    extra = copied.memory_analysis().temp_size_in_bytes - shared.memory_analysis().temp_size_in_bytes
    assert extra >= 0.9 * (G - 1) * prompt_bytes, (extra, prompt_bytes)


def _avals(jaxpr):
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            if hasattr(v.aval, "shape"):
                yield v.aval
        for p in eqn.params.values():
            for sub in (p if isinstance(p, (list, tuple)) else [p]):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _avals(inner)


def test_eos_and_stop_sequences_end_samples_and_the_loop():
    _, free, _, _ = shared_and_copied()
    toks = free.tokens_BGR
    # EOS ids: what every sample but (1, 1) draws at step 5; a stop sequence: (1, 1)'s tokens 1..2.
    eos = tuple(sorted({int(toks[b, g, 5]) for b in range(2) for g in range(G) if (b, g) != (1, 1)}))
    stop = tuple(int(t) for t in toks[1, 1, 1:3])
    tokens, lens = sampling.pad_prompts(PROMPTS, S)
    keys_BG = sampling.sample_keys(SEED, np.arange(len(PROMPTS)), G)
    out = jax.device_get(sampling.sample_groups(
        CFG, PARAMS, tokens, lens, keys_BG, max_new_tokens=R, strategy=STRATEGY,
        prefill_chunk=CHUNK, eos_ids=eos, stop_sequences=(stop,)))
    for b in range(len(PROMPTS)):
        for g in range(G):
            row = toks[b, g].tolist()
            ends = [i for i in range(R) if row[i] in eos] + \
                   [i + 1 for i in range(R - 1) if tuple(row[i:i + 2]) == stop]
            n = min(ends) + 1 if ends else R
            reason = 0 if not ends else (1 if row[n - 1] in eos else 2)
            assert int(out.lengths_BG[b, g]) == n and int(out.finish_BG[b, g]) == reason
            assert out.tokens_BGR[b, g, :n].tolist() == row[:n]  # same keys: same draws
            assert (out.tokens_BGR[b, g, n:] == sampling.PAD_ID).all()
            assert (out.logprobs_BGR[b, g, n:] == 0).all()
    assert set(out.finish_BG.ravel().tolist()) == {1, 2}  # both stop kinds occurred
    # The loop stops once every sample is done, not after R steps.
    assert int(out.steps) == int(out.lengths_BG.max()) < R


def test_generate_contract_and_buckets():
    prompts = [PROMPTS[0][:5], PROMPTS[1]]  # buckets 16 and 64: two sample_groups calls
    out = sampling.generate(CFG, PARAMS, prompts, max_new_tokens=R, temperature=1.0, top_p=0.95,
                            num_samples=2, seed=SEED, prefill_chunk=CHUNK)
    assert len(out) == 2 and all(len(s) == 2 for s in out)
    for i, samples in enumerate(out):
        # Sample g of prompt i is the key (seed, i, g) in its own bucket.
        tokens, lens = sampling.pad_prompts([prompts[i]], sampling.bucket_length(len(prompts[i]), CHUNK))
        ref = jax.device_get(sampling.sample_groups(
            CFG, PARAMS, tokens, lens, sampling.sample_keys(SEED, [i], 2), max_new_tokens=R,
            strategy=sampling.SamplingParams(1.0, top_p=0.95), eos_ids=(), stop_sequences=(),
            prefill_chunk=CHUNK, decode_impl="xla"))  # generate's exact call: no recompile
        for g, s in enumerate(samples):
            assert isinstance(s.tokens, list) and len(s.tokens) == len(s.logprobs) == R
            assert s.finish_reason == "length"
            assert s.tokens == ref.tokens_BGR[0, g].tolist()
            np.testing.assert_allclose(s.logprobs, ref.logprobs_BGR[0, g], atol=1e-6)
    assert out[1][0].tokens != out[1][1].tokens
    assert sampling.bucket_length(5, 32) == 16 and sampling.bucket_length(50, 32) == 64
    assert sampling.bucket_length(20, 512) == 32 and sampling.bucket_length(600, 512) == 1024


def test_pallas_decode_matches_xla():
    pytest.importorskip("kernels.decode")  # kernels.decode_attention
    tokens, lens = sampling.pad_prompts([p[:30] for p in PROMPTS], 32)
    keys_BG = sampling.sample_keys(SEED, np.arange(2), 2)
    run = functools.partial(sampling.sample_groups, CFG, PARAMS, tokens, lens, keys_BG,
                            max_new_tokens=6, strategy=STRATEGY, prefill_chunk=32,
                            return_logits=True)
    xla, pallas = jax.device_get(run(decode_impl="xla")), jax.device_get(run(decode_impl="pallas"))
    np.testing.assert_array_equal(pallas.tokens_BGR, xla.tokens_BGR)
    np.testing.assert_allclose(pallas.logits_BGRV, xla.logits_BGRV, atol=1e-4)
