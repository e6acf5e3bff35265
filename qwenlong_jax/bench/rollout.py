"""Rollout benchmark: continuous batching vs the lockstep sampler on the same prompts.

    python -m qwenlong_jax.bench rollout                 # the default config's first RL phase
    python -m qwenlong_jax.bench rollout --prompts 12 --rounds 2      # quicker

What runs: the default config (configs/default.py) -- its tiny base checkpoint
(qwenlong_jax/assets/base), tokenizer, synthetic RL prompts of the phase (`--phase`, default
rl_320), and its rollout settings (G=8, T=0.7, top-p 0.95, max_output 48 tokens, the tokenizer's
end tokens) -- so the response lengths are the ones that model produces on those prompts, as in
the default run's rollouts (from the base checkpoint: the run's SFT warm-up is not replayed).

  lockstep    sampling.sample_groups on `--slots` prompts per call (what the trainer's rollout
              does with rl.rollout_batch = slots): every sample of a call steps until the call's
              longest sample is done.
  continuous  sampling.continuous.sample_continuous with `--slots` prompt slots: a slot whose G
              samples are done takes the next prompt (decode chunks of `--chunk` steps).
  per-sample  sampling.sample_refill.sample_refill with slots x G decode rows (the same rows
              per step as the others) in blocks of `--block` rows sharing a prompt, and
              `--prompt-slots` prompt caches: a finished block takes the next `--block` samples,
              of whichever prompt is next.

All are compiled first; then `--rounds` rounds each time the three back to back (interleaved,
so all see the same machine load) and the speedups over lockstep are taken per round; the table
reports medians. Utilization = tokens kept / sample-steps computed. The samples are compared
token for token.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def setup(cfg, args):
    from qwenlong_jax import models
    from qwenlong_jax.config.model import exec_overrides
    from qwenlong_jax.run import context as run_context
    from qwenlong_jax.run import step_shapes
    from qwenlong_jax.sampling import sampler, strategies

    ctx = run_context.setup(cfg, tempfile.mkdtemp(prefix="bench_rollout_"), devices=jax.devices()[:1])
    m = cfg.model
    mcfg, params = models.load_hf_checkpoint(m.init_from, jnp.dtype(m.param_dtype),
                                             overrides=exec_overrides(m))
    phase = next(p for p in cfg.phases if p.name == args.phase)
    recs = [r for r in ctx.data.train if r.id.startswith(f"{phase.name}-")][:args.prompts]
    S = step_shapes.prompt_bucket(phase, step_shapes.PREFILL_CHUNK)
    tokens, lens = sampler.pad_prompts([ctx.prompt(r) for r in recs], S, pad_id=ctx.tok.pad_id)
    keys = sampler.sample_keys(jax.random.key(args.seed), np.arange(len(recs)), cfg.rl.group_size)
    kw = dict(max_new_tokens=phase.max_output,
              strategy=strategies.from_flags(cfg.rl.temperature, cfg.rl.top_p, cfg.rl.top_k, 0.0),
              eos_ids=tuple(ctx.tok.eos_ids), prefill_chunk=step_shapes.PREFILL_CHUNK)
    return mcfg, params, tokens, lens, keys, kw


def lockstep(mcfg, params, tokens, lens, keys, kw, slots):
    from qwenlong_jax.sampling import sampler
    parts = [jax.device_get(sampler.sample_groups(mcfg, params, tokens[i:i + slots],
                                                  lens[i:i + slots], keys[i:i + slots], **kw))
             for i in range(0, len(tokens), slots)]
    G = keys.shape[1]
    return (np.concatenate([p.tokens_BGR for p in parts]),
            np.concatenate([p.lengths_BG for p in parts]),
            sum(int(p.steps) * p.tokens_BGR.shape[0] * G for p in parts))


def continuous_run(mcfg, params, tokens, lens, keys, kw, slots, chunk):
    from qwenlong_jax.sampling import continuous
    out = continuous.sample_continuous(mcfg, params, tokens, lens, keys, slots=slots, chunk=chunk, **kw)
    return out.tokens_PGR, out.lengths_PG, out.token_steps


def sample_refill_run(mcfg, params, tokens, lens, keys, kw, rows, block, prompt_slots, chunk):
    from qwenlong_jax.sampling import sample_refill
    out = sample_refill.sample_refill(mcfg, params, tokens, lens, keys, rows=rows, block=block,
                                      prompt_slots=prompt_slots, chunk=chunk, **kw)
    return out.tokens_PGR, out.lengths_PG, out.token_steps


def run(args, argv: Sequence[str]) -> dict:
    """The benchmark for the flag values `args` (qwenlong_jax/cli/bench.py; `args.cfg`: the
    parsed --config)."""
    mcfg, params, tokens, lens, keys, kw = setup(args.cfg, args)
    runs = {"lockstep": lambda: lockstep(mcfg, params, tokens, lens, keys, kw, args.slots),
            "continuous": lambda: continuous_run(mcfg, params, tokens, lens, keys, kw, args.slots,
                                                 args.chunk),
            "per-sample": lambda: sample_refill_run(mcfg, params, tokens, lens, keys, kw,
                                                    args.slots * keys.shape[1], args.block,
                                                    args.prompt_slots or 2 * args.slots,
                                                    args.chunk)}
    res = {k: f() for k, f in runs.items()}  # compile (and the reference samples)
    same = {k: bool(np.array_equal(res["lockstep"][0], res[k][0])
                    and np.array_equal(res["lockstep"][1], res[k][1])) for k in runs if k != "lockstep"}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    ratios = {k: [a / b for a, b in zip(times["lockstep"], times[k])] for k in same}
    lengths = res["lockstep"][1].ravel()
    kept = int(lengths.sum())
    out = {
        "prompts": len(tokens), "G": int(keys.shape[1]), "R": kw["max_new_tokens"],
        "slots": args.slots, "chunk": args.chunk, "rows": args.slots * int(keys.shape[1]),
        "prompt_slots": args.prompt_slots or 2 * args.slots, "block": args.block, "same_samples": same,
        "length_mean": float(lengths.mean()), "length_p50": float(np.median(lengths)),
        "truncated_frac": float((lengths >= kw["max_new_tokens"]).mean()),
        "utilization": {k: kept / res[k][2] for k in runs},
        "wall_s": {k: float(np.median(v)) for k, v in times.items()},
        "speedup_rounds": ratios, "speedup_median": {k: float(np.median(v)) for k, v in ratios.items()},
        "speedup_range": {k: [min(v), max(v)] for k, v in ratios.items()},
    }
    print(f"rollout bench: {out['prompts']} prompts x G={out['G']}, R={out['R']}, "
          f"{args.slots} prompts per lockstep call / prompt slots, chunk {args.chunk}; "
          f"per-sample: {out['rows']} rows in blocks of {args.block}, {out['prompt_slots']} "
          f"prompt slots; "
          f"{args.rounds} interleaved rounds (host: {os.cpu_count()} CPUs)")
    print(f"response lengths: mean {out['length_mean']:.1f}, median {out['length_p50']:.0f}, "
          f"at the cap {out['truncated_frac']:.0%}")
    print(f"{'':11} {'utilization':>11} {'wall s (median)':>16}")
    for k in runs:
        print(f"{k:11} {out['utilization'][k]:>11.2f} {out['wall_s'][k]:>16.2f}")
    for k in same:
        lo, hi = out["speedup_range"][k]
        print(f"{k} throughput / lockstep: {out['speedup_median'][k]:.2f}x (per-round range "
              f"{lo:.2f}-{hi:.2f}); same samples token for token: {same[k]}")
    return out
