"""Python-level generation over lists of token ids (the docs/design.md contract).

    samples = sampling.generate(cfg, params, prompts, max_new_tokens=64, temperature=0.7,
                                top_p=0.95, num_samples=4, eos_ids=tok.eos_ids, seed=0)
    samples[i][g].tokens, .logprobs, .finish_reason      # "eos" | "length" | "stop"

Prompts are grouped by padded length (sampler.bucket_length) and each bucket is one
`sample_groups` call, so a mix of short and long prompts does not pad everything to the longest.
Sample g of prompt i uses the key (seed, i, g), whatever bucket the prompt lands in.
Stop sequences are token-id sequences; like EOS, the matched tokens stay in `.tokens`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from qwenlong_jax.models import params as params_lib
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.parallel import sharding
from qwenlong_jax.sampling import decode, sampler, strategies


@dataclasses.dataclass(frozen=True)
class Sample:
    tokens: list[int]  # generated tokens only
    logprobs: list[float]
    finish_reason: str  # "eos" | "length" | "stop"


def _batch_multiple(mesh) -> int:
    """Prompts per call are padded to the sampler's batch axes (decode.SAMPLER_RULES)."""
    if mesh is None:
        return 1
    return sharding.mesh_axis_size(mesh, tuple(a for a in decode.SAMPLER_RULES["batch"] if a in mesh.axis_names))


def generate(
    cfg: ModelConfig,
    params: dict,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    num_samples: int = 1,
    eos_ids: Sequence[int] = (),
    seed: int = 0,
    min_p: float = 0.0,
    stop_sequences: Sequence[Sequence[int]] = (),
    prefill_chunk: int = 512,
    decode_impl: decode.DecodeImpl = "xla",
    mesh: jax.sharding.Mesh | None = None,
) -> list[list[Sample]]:
    """num_samples samples per prompt; greedy when temperature == 0. With `mesh`, params are
    placed over fsdp/tensor and prompts over data (batches are padded to the batch axes)."""
    if num_samples <= 0:
        raise ValueError(f"num_samples must be > 0, got {num_samples}")
    strategy = strategies.from_flags(temperature, top_p, top_k, min_p)
    static = dict(
        max_new_tokens=max_new_tokens,
        strategy=strategy,
        eos_ids=tuple(int(e) for e in eos_ids),
        stop_sequences=tuple(tuple(int(t) for t in s) for s in stop_sequences),
        prefill_chunk=prefill_chunk,
        decode_impl=decode_impl,
    )
    if mesh is not None:
        params = jax.device_put(
            params, sharding.param_shardings(params_lib.logical_axes(cfg), params_lib.param_shapes(cfg), mesh)
        )
    buckets: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        buckets.setdefault(sampler.bucket_length(len(p), prefill_chunk), []).append(i)
    results: list[list[Sample] | None] = [None] * len(prompts)
    for S, ids in sorted(buckets.items()):
        mult = _batch_multiple(mesh)
        padded_ids = ids + [ids[-1]] * (-len(ids) % mult)  # filler rows repeat the last prompt
        tokens_BS, lens_B = sampler.pad_prompts([prompts[i] for i in padded_ids], S)
        keys_BG = sampler.sample_keys(seed, np.asarray(padded_ids), num_samples)
        if mesh is None:
            out = sampler.sample_groups(cfg, params, tokens_BS, lens_B, keys_BG, **static)
        else:
            batch = sharding.named(mesh, "batch", None)
            with jax.set_mesh(mesh):
                out = sampler.sample_groups(
                    cfg,
                    params,
                    jax.device_put(tokens_BS, batch),
                    jax.device_put(lens_B, sharding.named(mesh, "batch")),
                    keys_BG,
                    **static,
                )
        out = sharding.to_host(out)
        for row, i in enumerate(ids):
            results[i] = [_to_sample(out, row, g) for g in range(num_samples)]
    done = [r for r in results if r is not None]
    assert len(done) == len(results)  # every prompt's batch ran
    return done


def _to_sample(out: sampler.SampleOutput, b: int, g: int) -> Sample:
    n = int(out.lengths_BG[b, g])
    return Sample(
        tokens=[int(t) for t in out.tokens_BGR[b, g, :n]],
        logprobs=[float(x) for x in out.logprobs_BGR[b, g, :n]],
        finish_reason=decode.FINISH_REASONS[int(out.finish_BG[b, g])],
    )
