"""KV-cache sampler: chunked prefill once per prompt, G samples share its KV, strategies.

    samples = sampling.generate(cfg, params, prompts, max_new_tokens=..., temperature=0.0,
                                top_p=1.0, top_k=0, num_samples=1, eos_ids=(), seed=0)
    out = sampling.sample_groups(cfg, params, prompt_tokens_BS, prompt_lens_B, keys_BG,
                                 max_new_tokens=R, strategy=..., eos_ids=..., prefill_chunk=...)

Files: strategies.py (greedy/temperature/top-k/top-p/min-p, logprob convention), prompt_cache.py
(chunked prefill, prompt KV cache), decode_attention.py (one step's attention, xla and pallas),
decode.py (shared-prefix decode step and while_loop), sampler.py (jitted array API, RNG,
bucketing), generate.py (list-of-ids API); continuous batching: slot_state.py (per-sample
state), continuous.py (group refill), sample_refill.py (per-sample refill), samplers.py (the
rollout's sampler by name, rl.sampler).
"""

from qwenlong_jax.sampling.decode import (  # noqa: F401
    DECODE_IMPLS,
    FINISH_REASONS,
    PAD_ID,
    DecodeState,
    decode_step,
    init_state,
)
from qwenlong_jax.sampling.generate import Sample, generate  # noqa: F401
from qwenlong_jax.sampling.prompt_cache import PromptCache, chunk_attention, prefill  # noqa: F401
from qwenlong_jax.sampling.sampler import (  # noqa: F401
    SampleOutput,
    bucket_length,
    pad_prompts,
    sample_groups,
    sample_keys,
)
from qwenlong_jax.sampling.strategies import (  # noqa: F401
    Greedy,
    MinP,
    SamplingParams,
    Temperature,
    TopK,
    TopP,
    from_flags,
    sample_tokens,
)
