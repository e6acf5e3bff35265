"""Rollout benchmark: the refill samplers vs the lockstep sampler on the same prompts.

    python -m qwenlong_jax.bench rollout --run runs/default --phase rl_640   # a default run's policy
    python -m qwenlong_jax.bench rollout                   # the base checkpoint (no run needed)
    python -m qwenlong_jax.bench rollout --prompts 12 --rounds 2      # quicker

What runs: the config's (configs/default.py) tokenizer, the RL prompts of `--phase` (the run's
own phase data: the same synthetic records the trainer draws from) and its rollout settings
(G=8, T=0.7, top-p 0.95, the phase's max_output, the tokenizer's end tokens), sampled by a
policy: `--run DIR` takes a finished run's exported policy (DIR/hf, what the run's last
rollouts came from) and prints the response lengths of the run's own rollouts of that phase
(DIR/metrics.jsonl) next to the bench's; `--init_from` any HF checkpoint; by default the
config's base checkpoint.

  lockstep      sampling.samplers.lockstep, `--lockstep-batch` prompts per call (default 0:
                all at once, what the default config's rl.rollout_batch = 0 does)
  lockstep/B    the same with B = `--slots` prompts per call (the refill samplers' rows)
  group_refill  sampling.samplers.group_refill (continuous.py) with `--slots` prompt slots,
                decode chunks of up to `--chunk` steps (a chunk also ends when a slot frees),
                the drain packed into fewer rows
  per-sample    sampling.sample_refill with slots x G decode rows in blocks of `--block` rows
                sharing a prompt, `--prompt-slots` prompt caches

All are compiled first (a warm-up run, which also gives the samples compared token for token);
then `--rounds` rounds each run every sampler back to back (interleaved, so all see the same
machine load) and the speedups over lockstep are taken per round; the table reports medians.
Utilization = tokens kept / sample-steps computed (the samplers' own step counts).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def setup(cfg, args):
    from qwenlong_jax import models
    from qwenlong_jax.config.model import exec_overrides
    from qwenlong_jax.run import context as run_context, step_shapes
    from qwenlong_jax.sampling import sampler, strategies

    policy = args.init_from or (os.path.join(args.run, "hf") if args.run else "")
    if policy:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=policy))
    ctx = run_context.setup(cfg, tempfile.mkdtemp(prefix="bench_rollout_"), devices=jax.devices()[:1])
    m = cfg.model
    mcfg, params = models.load_hf_checkpoint(m.init_from, jnp.dtype(m.param_dtype), overrides=exec_overrides(m))
    phase = next(p for p in cfg.phases if p.name == args.phase)
    recs = [r for r in ctx.data.train if r.id.startswith(f"{phase.name}-")]
    recs = recs[args.skip : args.skip + args.prompts]
    S = step_shapes.prompt_bucket(phase, step_shapes.PREFILL_CHUNK)
    tokens, lens = sampler.pad_prompts([ctx.prompt(r) for r in recs], S, pad_id=ctx.tok.pad_id)
    keys = sampler.sample_keys(jax.random.key(args.seed), np.arange(len(recs)), cfg.rl.group_size)
    kw = dict(
        max_new_tokens=phase.max_output,
        strategy=strategies.from_flags(cfg.rl.temperature, cfg.rl.top_p, cfg.rl.top_k, 0.0),
        eos_ids=tuple(ctx.tok.eos_ids),
        prefill_chunk=step_shapes.PREFILL_CHUNK,
    )
    return mcfg, params, tokens, lens, keys, kw, m.init_from


def run_lengths(run_dir: str, phase: str) -> dict:
    """The run's own rollouts of `phase`: mean response length and truncated fraction over its
    steps (metrics.jsonl rows), and the lockstep utilization the run recorded."""
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    rows = [r for r in rows if r.get("phase") == phase and "response_length" in r]
    mean = lambda k: float(np.mean([r[k] for r in rows])) if rows else float("nan")  # noqa: E731
    return {
        "steps": len(rows),
        "length_mean": mean("response_length"),
        "truncated_frac": mean("truncated_frac"),
        "utilization": mean("rollout_utilization"),
    }


def make_runs(args, mcfg, params, tokens, lens, keys, kw) -> dict:
    from qwenlong_jax.sampling import continuous, sample_refill, samplers

    G = keys.shape[1]
    a = (mcfg, params, tokens, lens, keys)
    runs = {
        "lockstep": lambda: samplers.lockstep(*a, batch=args.lockstep_batch, **kw),
        "lockstep/B": lambda: samplers.lockstep(*a, batch=args.slots, **kw),
        "group_refill": lambda: continuous.sample_continuous(
            *a, slots=args.slots, chunk=args.chunk, drain=args.drain, **kw
        ),
        "per-sample": lambda: sample_refill.sample_refill(
            *a,
            rows=args.slots * G,
            block=args.block,
            chunk=args.chunk,
            prompt_slots=args.prompt_slots or 2 * args.slots,
            **kw,
        ),
    }
    names = args.samplers.split(",")
    bad = [n for n in names if n not in runs]
    if bad or "lockstep" not in names:
        raise SystemExit(f"error: --samplers {args.samplers!r}: choose from {', '.join(runs)}, lockstep included")
    return {n.replace("/B", f"/{args.slots}"): runs[n] for n in names}


def run(args, argv: Sequence[str]) -> dict:
    """The benchmark for the flag values `args` (qwenlong_jax/cli/bench.py; `args.cfg`: the
    parsed --config)."""
    mcfg, params, tokens, lens, keys, kw, policy = setup(args.cfg, args)
    runs = make_runs(args, mcfg, params, tokens, lens, keys, kw)
    res = {k: f() for k, f in runs.items()}  # compile (and the reference samples)
    ref = res["lockstep"]
    same = {
        k: bool(np.array_equal(ref.tokens_PGR, r.tokens_PGR) and np.array_equal(ref.lengths_PG, r.lengths_PG))
        for k, r in res.items()
        if k != "lockstep"
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    ratios = {k: [a / b for a, b in zip(times["lockstep"], times[k])] for k in same}
    small = f"lockstep/{args.slots}"  # lockstep at the refill samplers' rows, when it ran
    vs_small = {
        k: float(np.median([a / b for a, b in zip(times[small], times[k])]))
        for k in same
        if small in times and k != small
    }
    lengths = ref.lengths_PG.ravel()
    kept = int(lengths.sum())
    out = {
        "policy": os.path.basename(os.path.normpath(policy)) if policy else "",
        "phase": args.phase,
        "prompts": len(tokens),
        "G": int(keys.shape[1]),
        "R": kw["max_new_tokens"],
        "S": int(tokens.shape[1]),
        "slots": args.slots,
        "chunk": args.chunk,
        "rows": args.slots * int(keys.shape[1]),
        "block": args.block,
        "prompt_slots": args.prompt_slots or 2 * args.slots,
        "same_samples": same,
        "length_mean": float(lengths.mean()),
        "length_p50": float(np.median(lengths)),
        "truncated_frac": float((lengths >= kw["max_new_tokens"]).mean()),
        "utilization": {k: kept / r.token_steps for k, r in res.items()},
        "decode_steps": {k: r.decode_steps for k, r in res.items()},
        "wall_s": {k: float(np.median(v)) for k, v in times.items()},
        "speedup_rounds": ratios,
        "speedup_median": {k: float(np.median(v)) for k, v in ratios.items()},
        "speedup_range": {k: [min(v), max(v)] for k, v in ratios.items()},
        "speedup_vs_small_lockstep": vs_small,
    }
    if args.run:
        out["run"] = run_lengths(args.run, args.phase)
    if args.profile:
        out["profile"] = {k: profile(f) for k, f in runs.items()}
    report(out, args)
    return out


PROFILED = {
    "sampler": ("sample_groups",),
    "continuous": ("prefill_slots", "decode_chunk", "take_slots"),
    "sample_refill": ("prefill_prompt", "start_rows", "decode_rows"),
}


def profile(run) -> dict:
    """Seconds in each jitted call of one run (each waited for: the calls no longer overlap
    the host) and the rest (host); sample_groups is the lockstep call, prefill and decode."""
    import importlib

    spent: dict[str, float] = {}
    saved = []
    for mod_name, fns in PROFILED.items():
        mod = importlib.import_module(f"qwenlong_jax.sampling.{mod_name}")
        for name in fns:
            f = getattr(mod, name)
            saved.append((mod, name, f))

            def timed(*a, _f=f, _n=name, **k):
                t0 = time.perf_counter()
                r = jax.block_until_ready(_f(*a, **k))
                spent[_n] = spent.get(_n, 0.0) + time.perf_counter() - t0
                return r

            setattr(mod, name, timed)
    try:
        t0 = time.perf_counter()
        run()
        wall = time.perf_counter() - t0
    finally:
        for mod, name, f in saved:
            setattr(mod, name, f)
    return {"wall_s": wall, **spent, "host_s": wall - sum(spent.values())}


def report(out: dict, args) -> None:
    print(
        f"rollout bench: {out['phase']}, {out['prompts']} prompts x G={out['G']}, "
        f"S={out['S']}, R={out['R']}; lockstep {args.lockstep_batch or out['prompts']} prompts "
        f"per call; refill: {args.slots} prompt slots, chunk {args.chunk}"
        f"{', drain packed' if args.drain else ''}; per-sample: {out['rows']} rows in "
        f"blocks of {args.block}, {out['prompt_slots']} prompt caches; {args.rounds} "
        f"interleaved rounds (host: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})"
    )
    print(
        f"response lengths: mean {out['length_mean']:.1f}, median {out['length_p50']:.0f}, "
        f"at the cap {out['truncated_frac']:.1%}"
    )
    if "run" in out:
        r = out["run"]
        print(
            f"the run's own {out['phase']} rollouts ({r['steps']} steps): mean "
            f"{r['length_mean']:.1f}, at the cap {r['truncated_frac']:.1%}, lockstep "
            f"utilization {r['utilization']:.2f}"
        )
    print(f"{'':14} {'utilization':>11} {'decode steps':>12} {'wall s (median)':>16}")
    for k in out["wall_s"]:
        print(f"{k:14} {out['utilization'][k]:>11.2f} {out['decode_steps'][k]:>12} {out['wall_s'][k]:>16.2f}")
    for k, prof in out.get("profile", {}).items():
        print(f"profile {k}: " + ", ".join(f"{n} {v:.2f} s" for n, v in prof.items()))
    for k, same in out["same_samples"].items():
        lo, hi = out["speedup_range"][k]
        vs = out["speedup_vs_small_lockstep"].get(k)
        print(
            f"{k} throughput / lockstep: {out['speedup_median'][k]:.2f}x (per-round range "
            f"{lo:.2f}-{hi:.2f}{'' if vs is None else f'; / lockstep/{args.slots}: {vs:.2f}x'})"
            f"; same samples token for token: {same}"
        )
