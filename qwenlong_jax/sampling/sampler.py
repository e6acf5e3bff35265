"""Array-level group sampler (what the trainer calls): prefill once, decode G samples per prompt.

    keys_BG = sample_keys(seed, prompt_ids_B, num_samples=G)
    out = sample_groups(cfg, params, prompt_tokens_BS, prompt_lens_B, keys_BG,
                        max_new_tokens=R, strategy=SamplingParams(1.0, top_p=0.95),
                        eos_ids=tok.eos_ids, prefill_chunk=512, decode_impl="xla")
    out.tokens_BGR, out.logprobs_BGR, out.lengths_BG, out.finish_BG

`sample_groups` is jitted; it compiles once per (B, S, G, R) and static option set, so a
trainer keeps B, S (the phase's max prompt length, a multiple of prefill_chunk) and R (the
phase's max response length) fixed for a phase. Prompts are RIGHT-padded (token i at slot and
RoPE position i; see prompt_cache.py); `bucket_length` / `pad_prompts` produce that layout with
little padding for the Python API.

RNG: sample g of prompt b draws step t from fold_in(keys_BG[b, g], t), and sample_keys derives
keys_BG[b, g] from (seed, prompt id, g). A sample's tokens therefore depend only on its own
key, never on the batch layout: G samples sharing one prompt cache give the same tokens as G
copies of the prompt with the same keys (tested).

Outputs after a sample finishes are PAD_ID tokens with logprob 0; `lengths_BG` counts the kept
tokens, the EOS token or the stop sequence included. finish_BG: 0 length, 1 eos, 2 stop.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.parallel import sharding
from qwenlong_jax.sampling import decode, prompt_cache, strategies


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SampleOutput:
    """On device from the jitted sampler, or on host (numpy) once fetched or assembled by a refill sampler."""

    tokens_BGR: jax.Array | np.ndarray  # int32, PAD_ID after the end
    logprobs_BGR: jax.Array | np.ndarray  # float32 under log_softmax(logits / T) (strategies.py)
    lengths_BG: jax.Array | np.ndarray  # int32
    finish_BG: jax.Array | np.ndarray  # int32 decode.FINISH_* codes
    steps: jax.Array | np.ndarray | int  # int32 tokens generated per sample before the loop stopped (<= R)
    logits_BGRV: jax.Array | None = None  # debug (return_logits=True): each step's logits


def sample_keys(seed: int | jax.Array, prompt_ids_B, num_samples: int) -> jax.Array:
    """Typed keys [B, G]: key (b, g) = fold_in(fold_in(key(seed), prompt_ids_B[b]), g).

    `seed` is an int or a typed key (e.g. the trainer's per-step key); prompt_ids_B are stable
    prompt indices, so a prompt's samples do not depend on where it sits in the batch."""
    base = jax.random.key(int(seed)) if isinstance(seed, (int, np.integer)) else seed
    ids_B = jnp.asarray(prompt_ids_B, jnp.int32)
    per_prompt = jax.vmap(lambda i: jax.random.fold_in(base, i))(ids_B)
    return jax.vmap(lambda k: jax.vmap(lambda g: jax.random.fold_in(k, g))(jnp.arange(num_samples, dtype=jnp.int32)))(
        per_prompt
    )


def _check_static(
    cfg: ModelConfig, B: int, S: int, keys_shape, max_new_tokens: int, eos_ids, stop_sequences, decode_impl
) -> None:
    if len(keys_shape) != 2 or keys_shape[0] != B:
        raise ValueError(f"keys_BG must be [B={B}, G] (sampling.sample_keys), got {keys_shape}")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be > 0, got {max_new_tokens}")
    if decode_impl not in decode.DECODE_IMPLS:
        raise ValueError(f"decode_impl: {decode_impl!r} is not one of {', '.join(decode.DECODE_IMPLS)}")
    bad = [i for i in eos_ids if not 0 <= i < cfg.vocab_size]
    if bad:
        raise ValueError(f"eos_ids {bad} are outside the vocabulary [0, {cfg.vocab_size})")
    if any(len(s) == 0 for s in stop_sequences):
        raise ValueError("stop_sequences must not contain an empty sequence")


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=(
        "max_new_tokens",
        "strategy",
        "eos_ids",
        "stop_sequences",
        "prefill_chunk",
        "decode_impl",
        "return_logits",
    ),
)
def sample_groups(
    cfg: ModelConfig,
    params: dict,
    prompt_tokens_BS: jax.Array,
    prompt_lens_B: jax.Array,
    keys_BG: jax.Array,
    *,
    max_new_tokens: int,
    strategy: strategies.AnyStrategy = strategies.GREEDY,
    eos_ids: tuple[int, ...] = (),
    stop_sequences: tuple[tuple[int, ...], ...] = (),
    prefill_chunk: int = 512,
    decode_impl: decode.DecodeImpl = "xla",
    return_logits: bool = False,
) -> SampleOutput:
    """G = keys_BG.shape[1] samples of R = max_new_tokens tokens for each right-padded prompt."""
    B, S = prompt_tokens_BS.shape
    _check_static(cfg, B, S, keys_BG.shape, max_new_tokens, eos_ids, stop_sequences, decode_impl)
    with sharding.rules(**decode.SAMPLER_RULES):
        return _sample_groups(
            cfg,
            params,
            prompt_tokens_BS,
            prompt_lens_B,
            keys_BG,
            max_new_tokens,
            strategy,
            eos_ids,
            stop_sequences,
            prefill_chunk,
            decode_impl,
            return_logits,
        )


def _sample_groups(
    cfg,
    params,
    prompt_tokens_BS,
    prompt_lens_B,
    keys_BG,
    max_new_tokens,
    strategy,
    eos_ids,
    stop_sequences,
    prefill_chunk,
    decode_impl,
    return_logits,
):
    B, S = prompt_tokens_BS.shape
    G, R = keys_BG.shape[1], max_new_tokens
    # The weights in the compute dtype once per call (every decode step reads them).
    dt = jnp.dtype(cfg.dtype)
    params = jax.tree.map(lambda a: a.astype(dt) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)
    cache = prompt_cache.prefill(cfg, params, prompt_tokens_BS, prompt_lens_B, chunk=prefill_chunk)
    state = decode.init_state(cfg, B, G, R, return_logits=return_logits)
    # First token of every sample from the shared prefill logits (no per-sample copy of them).
    logits_BGV = jnp.broadcast_to(cache.last_logits_BV[:, None], (B, G, cfg.vocab_size))
    state = decode.advance(strategy, state, logits_BGV, keys_BG, eos_ids, stop_sequences)
    state = decode.decode_loop(
        cfg,
        params,
        cache,
        state,
        keys_BG,
        strategy=strategy,
        eos_ids=eos_ids,
        stop_sequences=stop_sequences,
        decode_impl=decode_impl,
    )
    return SampleOutput(
        state.tokens_BGR, state.logprobs_BGR, state.lengths_BG, state.finish_BG, state.step, state.logits_BGRV
    )


def bucket_length(n: int, prefill_chunk: int, min_bucket: int = 16) -> int:
    """Padded prompt length for an n-token prompt: the next power of two (>= min_bucket) while
    it fits in one chunk, else the next multiple of prefill_chunk. Few distinct shapes (few
    compiles) and padding below 2x for short prompts, below one chunk for long ones."""
    if n <= 0:
        raise ValueError(f"prompt length must be > 0, got {n}")
    p = max(min_bucket, 1 << (n - 1).bit_length())
    if p <= prefill_chunk:
        return p
    return -(-n // prefill_chunk) * prefill_chunk


def pad_prompts(prompts: Sequence[Sequence[int]], S: int, pad_id: int = 0):
    """Right-padded int32 tokens [B, S] and lengths [B] (numpy)."""
    tokens = np.full((len(prompts), S), pad_id, np.int32)
    lens = np.zeros((len(prompts),), np.int32)
    for i, p in enumerate(prompts):
        if not 0 < len(p) <= S:
            raise ValueError(f"prompt {i} has {len(p)} tokens; need 1..{S}")
        tokens[i, : len(p)] = p
        lens[i] = len(p)
    return tokens, lens
