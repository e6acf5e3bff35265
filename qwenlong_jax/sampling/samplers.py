"""The rollout's sampler by name (the config's `rl.sampler`): the same samples token for token,
different schedules.

    out = samplers.sample("group_refill", cfg, params, tokens_PS, lens_P, keys_PG, batch=8,
                          max_new_tokens=R, strategy=..., eos_ids=..., prefill_chunk=512)
    out.tokens_PGR, out.logprobs_PGR, out.lengths_PG, out.finish_PG   # numpy, on the host
    out.token_steps      # sample-steps computed (utilization = kept tokens / token_steps)

  lockstep      sampler.sample_groups on `batch` prompts per call (0 = all at once): every
                sample of a call steps until the call's longest sample is done.
  group_refill  continuous.sample_continuous with `batch` prompt slots (0 = all prompts: no
                refill): a slot whose G samples are done takes the next prompt between decode
                chunks of up to REFILL_CHUNK steps.

`batch` bounds the prompts whose caches exist at once in both (rl.rollout_batch).
"""

from __future__ import annotations

import numpy as np

from qwenlong_jax.parallel import sharding
from qwenlong_jax.sampling import continuous, sampler
from qwenlong_jax.sampling.slot_state import ContinuousOutput

SAMPLERS = ("lockstep", "group_refill")
REFILL_CHUNK = 16  # decode steps per call between refills (a chunk also ends when a slot frees)


def lockstep(cfg, params, tokens_PS, lens_P, keys_PG, *, batch: int, **kw) -> ContinuousOutput:
    P, G = keys_PG.shape
    b = batch or P
    parts = [
        sharding.to_host(
            sampler.sample_groups(cfg, params, tokens_PS[i : i + b], lens_P[i : i + b], keys_PG[i : i + b], **kw)
        )
        for i in range(0, P, b)
    ]
    cat = lambda f: np.concatenate([getattr(p, f) for p in parts])  # noqa: E731
    steps = [int(p.steps) for p in parts]
    token_steps = sum(n * p.tokens_BGR.shape[0] * G for n, p in zip(steps, parts))
    return ContinuousOutput(
        cat("tokens_BGR"), cat("logprobs_BGR"), cat("lengths_BG"), cat("finish_BG"), token_steps, sum(steps)
    )


def group_refill(cfg, params, tokens_PS, lens_P, keys_PG, *, batch: int, **kw) -> ContinuousOutput:
    return continuous.sample_continuous(
        cfg, params, tokens_PS, lens_P, keys_PG, slots=batch or len(tokens_PS), chunk=REFILL_CHUNK, **kw
    )


def sample(name: str, cfg, params, tokens_PS, lens_P, keys_PG, *, batch: int, **kw) -> ContinuousOutput:
    """P prompts x G samples by the sampler `name` (SAMPLERS); kw: sample_groups' options
    (max_new_tokens, strategy, eos_ids, stop_sequences, prefill_chunk, decode_impl)."""
    fns = {"lockstep": lockstep, "group_refill": group_refill}
    if name not in fns:
        raise ValueError(f"sampler {name!r} is not one of {', '.join(SAMPLERS)}")
    return fns[name](cfg, params, tokens_PS, lens_P, keys_PG, batch=batch, **kw)
