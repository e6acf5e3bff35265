"""Group sampling: one prompt KV per prompt shared by its G samples, equal to copying the prompt
G times with the same keys; EOS / stop sequences end samples and the loop; generate() contract."""

import functools
import math

import jax
import numpy as np
import pytest

from qwenlong_jax import models, sampling

CFG = models.get_model_config("tiny", vocab_size=64, num_layers=2)  # K=2, H=32
# One jitted init (eager init compiles a random op per parameter shape: slow on a shared CPU).
PARAMS = jax.jit(models.init_params, static_argnums=(0, 2))(CFG, jax.random.key(0), 0.2)
LENGTHS, S, CHUNK, G, R = (40, 50), 64, 32, 4, 12
PROMPTS = [np.random.default_rng(5).integers(1, 64, size=n).tolist() for n in LENGTHS]
STRATEGY = sampling.SamplingParams(1.0, top_p=0.95)
SEED = 7


def _compile(tokens_BS, lens_B, keys_BG):
    """AOT-compiled sample_groups (its memory_analysis is checked; call it without CFG)."""
    return sampling.sample_groups.lower(
        CFG, PARAMS, tokens_BS, lens_B, keys_BG, max_new_tokens=R, strategy=STRATEGY, prefill_chunk=CHUNK
    ).compile()


@functools.cache
def shared_and_copied():
    B = len(PROMPTS)
    tokens, lens = sampling.pad_prompts(PROMPTS, S)
    keys_BG = sampling.sample_keys(SEED, np.arange(B), G)
    shared = _compile(tokens, lens, keys_BG)
    # The same samples as B*G one-sample prompts: prompt row b*G+g carries key (b, g).
    copied = _compile(np.repeat(tokens, G, 0), np.repeat(lens, G), keys_BG.reshape(B * G, 1))
    return (
        shared,
        jax.device_get(shared(PARAMS, tokens, lens, keys_BG)),
        copied,
        jax.device_get(copied(PARAMS, np.repeat(tokens, G, 0), np.repeat(lens, G), keys_BG.reshape(B * G, 1))),
    )


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
    cache = jax.eval_shape(lambda t, n: sampling.prefill(CFG, PARAMS, t, n, chunk=CHUNK), tokens, lens)
    assert cache.k_LBSKH.shape == cache.v_LBSKH.shape == (L, B, S, K, H)
    state = jax.eval_shape(lambda: sampling.init_state(CFG, B, G, R, return_logits=False))
    assert state.resp_k_LBGRKH.shape == (L, B, G, R, K, H)
    prompt_bytes = 2 * L * B * S * K * H * 4
    assert cache.k_LBSKH.size * 4 + cache.v_LBSKH.size * 4 == prompt_bytes

    # No array anywhere in the program (loop bodies included) is as large as one layer's prompt
    # keys copied G times: [B, G, S, K, H] never exists.
    keys_BG = sampling.sample_keys(SEED, np.arange(B), G)
    run = functools.partial(sampling.sample_groups, CFG, max_new_tokens=R, strategy=STRATEGY, prefill_chunk=CHUNK)
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
            for sub in p if isinstance(p, (list, tuple)) else [p]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _avals(inner)


def _stops():
    """EOS ids: what every sample but (1, 1) draws at step 5; a stop sequence: (1, 1)'s tokens
    1..2 (picked from the free run, so both kinds of stop happen before R)."""
    toks = shared_and_copied()[1].tokens_BGR
    eos = tuple(sorted({int(toks[b, g, 5]) for b in range(2) for g in range(G) if (b, g) != (1, 1)}))
    return eos, tuple(int(t) for t in toks[1, 1, 1:3])


def _expected_end(row, eos, stop):
    """(kept length, finish code) of a free-run token row under these EOS ids / stop sequence."""
    ends = [i for i in range(R) if row[i] in eos] + [i + 1 for i in range(R - 1) if tuple(row[i : i + 2]) == stop]
    if not ends:
        return R, 0
    n = min(ends) + 1
    return n, (1 if row[n - 1] in eos else 2)


def test_eos_and_stop_sequences_end_samples_and_the_loop():
    free = shared_and_copied()[1].tokens_BGR
    eos, stop = _stops()
    tokens, lens = sampling.pad_prompts(PROMPTS, S)
    keys_BG = sampling.sample_keys(SEED, np.arange(len(PROMPTS)), G)
    # Exactly generate()'s call for these prompts, so test_generate reuses this compile.
    out = jax.device_get(
        sampling.sample_groups(
            CFG,
            PARAMS,
            tokens,
            lens,
            keys_BG,
            max_new_tokens=R,
            strategy=STRATEGY,
            eos_ids=eos,
            stop_sequences=(stop,),
            prefill_chunk=CHUNK,
            decode_impl="xla",
        )
    )
    for b in range(len(PROMPTS)):
        for g in range(G):
            row = free[b, g].tolist()
            n, reason = _expected_end(row, eos, stop)
            assert int(out.lengths_BG[b, g]) == n and int(out.finish_BG[b, g]) == reason
            assert out.tokens_BGR[b, g, :n].tolist() == row[:n]  # same keys: same draws
            assert (out.tokens_BGR[b, g, n:] == sampling.PAD_ID).all()
            assert (out.logprobs_BGR[b, g, n:] == 0).all()
    assert set(out.finish_BG.ravel().tolist()) == {1, 2}  # both stop kinds occurred
    # The loop stops once every sample is done, not after R steps.
    assert int(out.steps) == int(out.lengths_BG.max()) < R


def test_generate_contract_and_buckets():
    free = shared_and_copied()[1]
    eos, stop = _stops()
    short = PROMPTS[0][:5]  # bucket 16; PROMPTS are bucket 64 (prefill_chunk 32)
    out = sampling.generate(
        CFG,
        PARAMS,
        [PROMPTS[0], short, PROMPTS[1]],
        max_new_tokens=R,
        temperature=1.0,
        top_p=0.95,
        num_samples=G,
        seed=SEED,
        eos_ids=list(eos),
        stop_sequences=[list(stop)],
        prefill_chunk=CHUNK,
    )
    assert len(out) == 3 and all(len(s) == G for s in out)
    # The short prompt is index 1: its samples use keys (SEED, 1, g) in its own bucket.
    tokens, lens = sampling.pad_prompts([short], sampling.bucket_length(len(short), CHUNK))
    ref_short = jax.device_get(
        sampling.sample_groups(
            CFG,
            PARAMS,
            tokens,
            lens,
            sampling.sample_keys(SEED, [1], G),
            max_new_tokens=R,
            strategy=STRATEGY,
            eos_ids=eos,
            stop_sequences=(stop,),
            prefill_chunk=CHUNK,
            decode_impl="xla",
        )
    )
    names = {0: "length", 1: "eos", 2: "stop"}
    for g in range(G):
        n = int(ref_short.lengths_BG[0, g])
        assert out[1][g].tokens == ref_short.tokens_BGR[0, g, :n].tolist()
        assert out[1][g].finish_reason == names[int(ref_short.finish_BG[0, g])]
    # The long prompts sit at indices 0 and 2, yet use keys (SEED, 0|2, g): compare with the free
    # run (keys (SEED, 0|1, g)) for index 0 only, and check index 2 differs from key (SEED, 1).
    for g, s in enumerate(out[0]):
        n, reason = _expected_end(free.tokens_BGR[0, g].tolist(), eos, stop)
        assert isinstance(s.tokens, list) and len(s.tokens) == len(s.logprobs) == n
        assert s.tokens == free.tokens_BGR[0, g, :n].tolist() and s.finish_reason == names[reason]
        np.testing.assert_allclose(s.logprobs, free.logprobs_BGR[0, g, :n], atol=1e-6)
    assert [s.tokens for s in out[2]] != [free.tokens_BGR[1, g, : len(out[2][g].tokens)].tolist() for g in range(G)]
    assert sampling.bucket_length(5, 32) == 16 and sampling.bucket_length(50, 32) == 64
    assert sampling.bucket_length(20, 512) == 32 and sampling.bucket_length(600, 512) == 1024


def test_pallas_decode_matches_xla():
    pytest.importorskip("kernels.decode")  # kernels.decode_attention
    _, xla, _, _ = shared_and_copied()
    tokens, lens = sampling.pad_prompts(PROMPTS, S)
    keys_BG = sampling.sample_keys(SEED, np.arange(len(PROMPTS)), G)
    pallas = jax.device_get(
        sampling.sample_groups(
            CFG,
            PARAMS,
            tokens,
            lens,
            keys_BG,
            max_new_tokens=R,
            strategy=STRATEGY,
            prefill_chunk=CHUNK,
            decode_impl="pallas",
        )
    )
    np.testing.assert_array_equal(pallas.tokens_BGR, xla.tokens_BGR)
    np.testing.assert_allclose(pallas.logprobs_BGR, xla.logprobs_BGR, atol=1e-4)
