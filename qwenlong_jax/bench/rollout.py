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

import argparse
import json
import os
import tempfile
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m qwenlong_jax.bench rollout")
    p.add_argument("--config", default="configs/default.py")
    p.add_argument("--phase", default="rl_320")
    p.add_argument("--run", default="", help="a finished run's workdir: its exported policy "
                   "(hf/) samples, its metrics.jsonl gives the run's own response lengths")
    p.add_argument("--init_from", default="", help="an HF checkpoint to sample with")
    p.add_argument("--prompts", type=int, default=24, help="prompts per rollout (the default run's "
                   "generation batch is 24)")
    p.add_argument("--skip", type=int, default=0, help="start at this prompt of the phase")
    p.add_argument("--slots", type=int, default=8, help="prompt slots of the refill samplers")
    p.add_argument("--lockstep-batch", type=int, default=0, help="prompts per lockstep call (0: all)")
    p.add_argument("--chunk", type=int, default=16, help="refill: decode steps per call at most")
    p.add_argument("--no-drain", action="store_true", help="group_refill: keep all slots to the end")
    p.add_argument("--prompt-slots", type=int, default=0, help="per-sample: prompt caches "
                   "(default 2 x slots)")
    p.add_argument("--block", type=int, default=1, help="per-sample: rows per block (divides G)")
    p.add_argument("--samplers", default="lockstep,lockstep/B,group_refill,per-sample")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="after the rounds, one more run of "
                   "each sampler with its jitted calls timed one by one: prefill / decode / host")
    return p.parse_args(argv)


def setup(args):
    from qwenlong_jax import config_cli, models, run_context, step_shapes
    from qwenlong_jax.run_setup import exec_overrides
    from qwenlong_jax.sampling import sampler, strategies

    policy = args.init_from or (os.path.join(args.run, "hf") if args.run else "")
    cfg = config_cli.load_config(args.config, [f"model.init_from={policy}"] if policy else [])
    ctx = run_context.setup(cfg, tempfile.mkdtemp(prefix="bench_rollout_"), devices=jax.devices()[:1])
    m = cfg.model
    mcfg, params = models.load_hf_checkpoint(m.init_from, jnp.dtype(m.param_dtype),
                                             overrides=exec_overrides(m))
    phase = next(p for p in cfg.phases if p.name == args.phase)
    recs = [r for r in ctx.data.train if r.id.startswith(f"{phase.name}-")]
    recs = recs[args.skip:args.skip + args.prompts]
    S = step_shapes.prompt_bucket(phase, step_shapes.PREFILL_CHUNK)
    tokens, lens = sampler.pad_prompts([ctx.prompt(r) for r in recs], S, pad_id=ctx.tok.pad_id)
    keys = sampler.sample_keys(jax.random.key(args.seed), np.arange(len(recs)), cfg.rl.group_size)
    kw = dict(max_new_tokens=phase.max_output,
              strategy=strategies.from_flags(cfg.rl.temperature, cfg.rl.top_p, cfg.rl.top_k, 0.0),
              eos_ids=tuple(ctx.tok.eos_ids), prefill_chunk=step_shapes.PREFILL_CHUNK)
    return mcfg, params, tokens, lens, keys, kw, m.init_from


def run_lengths(run_dir: str, phase: str) -> dict:
    """The run's own rollouts of `phase`: mean response length and truncated fraction over its
    steps (metrics.jsonl rows), and the lockstep utilization the run recorded."""
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    rows = [r for r in rows if r.get("phase") == phase and "response_length" in r]
    mean = lambda k: float(np.mean([r[k] for r in rows])) if rows else float("nan")  # noqa: E731
    return {"steps": len(rows), "length_mean": mean("response_length"),
            "truncated_frac": mean("truncated_frac"), "utilization": mean("rollout_utilization")}


def make_runs(args, mcfg, params, tokens, lens, keys, kw) -> dict:
    from qwenlong_jax.sampling import continuous, sample_refill, samplers
    G = keys.shape[1]
    a = (mcfg, params, tokens, lens, keys)
    runs = {
        "lockstep": lambda: samplers.lockstep(*a, batch=args.lockstep_batch, **kw),
        "lockstep/B": lambda: samplers.lockstep(*a, batch=args.slots, **kw),
        "group_refill": lambda: continuous.sample_continuous(
            *a, slots=args.slots, chunk=args.chunk, drain=not args.no_drain, **kw),
        "per-sample": lambda: sample_refill.sample_refill(
            *a, rows=args.slots * G, block=args.block, chunk=args.chunk,
            prompt_slots=args.prompt_slots or 2 * args.slots, **kw),
    }
    names = args.samplers.split(",")
    bad = [n for n in names if n not in runs]
    if bad or "lockstep" not in names:
        raise SystemExit(f"error: --samplers {args.samplers!r}: choose from {', '.join(runs)}, "
                         "lockstep included")
    return {n.replace("/B", f"/{args.slots}"): runs[n] for n in names}


def main(argv: Sequence[str]) -> dict:
    args = parse_args(argv)
    mcfg, params, tokens, lens, keys, kw, policy = setup(args)
    runs = make_runs(args, mcfg, params, tokens, lens, keys, kw)
    res = {k: f() for k, f in runs.items()}  # compile (and the reference samples)
    ref = res["lockstep"]
    same = {k: bool(np.array_equal(ref.tokens_PGR, r.tokens_PGR)
                    and np.array_equal(ref.lengths_PG, r.lengths_PG)) for k, r in res.items()
            if k != "lockstep"}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    ratios = {k: [a / b for a, b in zip(times["lockstep"], times[k])] for k in same}
    small = f"lockstep/{args.slots}"  # lockstep at the refill samplers' rows, when it ran
    vs_small = {k: float(np.median([a / b for a, b in zip(times[small], times[k])]))
                for k in same if small in times and k != small}
    lengths = ref.lengths_PG.ravel()
    kept = int(lengths.sum())
    out = {
        "policy": os.path.basename(os.path.normpath(policy)) if policy else "",
        "phase": args.phase, "prompts": len(tokens), "G": int(keys.shape[1]),
        "R": kw["max_new_tokens"], "S": int(tokens.shape[1]), "slots": args.slots,
        "chunk": args.chunk, "rows": args.slots * int(keys.shape[1]), "block": args.block,
        "prompt_slots": args.prompt_slots or 2 * args.slots, "same_samples": same,
        "length_mean": float(lengths.mean()), "length_p50": float(np.median(lengths)),
        "truncated_frac": float((lengths >= kw["max_new_tokens"]).mean()),
        "utilization": {k: kept / r.token_steps for k, r in res.items()},
        "decode_steps": {k: r.decode_steps for k, r in res.items()},
        "wall_s": {k: float(np.median(v)) for k, v in times.items()},
        "speedup_rounds": ratios, "speedup_median": {k: float(np.median(v)) for k, v in ratios.items()},
        "speedup_range": {k: [min(v), max(v)] for k, v in ratios.items()},
        "speedup_vs_small_lockstep": vs_small,
    }
    if args.run:
        out["run"] = run_lengths(args.run, args.phase)
    if args.profile:
        out["profile"] = {k: profile(f) for k, f in runs.items()}
    report(out, args)
    return out


PROFILED = {"sampler": ("sample_groups",), "continuous": ("prefill_slots", "decode_chunk", "take_slots"),
            "sample_refill": ("prefill_prompt", "start_rows", "decode_rows")}


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
    print(f"rollout bench: {out['phase']}, {out['prompts']} prompts x G={out['G']}, "
          f"S={out['S']}, R={out['R']}; lockstep {args.lockstep_batch or out['prompts']} prompts "
          f"per call; refill: {args.slots} prompt slots, chunk {args.chunk}"
          f"{'' if args.no_drain else ', drain packed'}; per-sample: {out['rows']} rows in "
          f"blocks of {args.block}, {out['prompt_slots']} prompt caches; {args.rounds} "
          f"interleaved rounds (host: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    print(f"response lengths: mean {out['length_mean']:.1f}, median {out['length_p50']:.0f}, "
          f"at the cap {out['truncated_frac']:.1%}")
    if "run" in out:
        r = out["run"]
        print(f"the run's own {out['phase']} rollouts ({r['steps']} steps): mean "
              f"{r['length_mean']:.1f}, at the cap {r['truncated_frac']:.1%}, lockstep "
              f"utilization {r['utilization']:.2f}")
    print(f"{'':14} {'utilization':>11} {'decode steps':>12} {'wall s (median)':>16}")
    for k in out["wall_s"]:
        print(f"{k:14} {out['utilization'][k]:>11.2f} {out['decode_steps'][k]:>12} "
              f"{out['wall_s'][k]:>16.2f}")
    for k, prof in out.get("profile", {}).items():
        print(f"profile {k}: " + ", ".join(f"{n} {v:.2f} s" for n, v in prof.items()))
    for k, same in out["same_samples"].items():
        lo, hi = out["speedup_range"][k]
        vs = out["speedup_vs_small_lockstep"].get(k)
        print(f"{k} throughput / lockstep: {out['speedup_median'][k]:.2f}x (per-round range "
              f"{lo:.2f}-{hi:.2f}{'' if vs is None else f'; / lockstep/{args.slots}: {vs:.2f}x'})"
              f"; same samples token for token: {same}")
