"""Run the paper's ablation in miniature over several seeds and judge its claims (issues 9, 17).

    python -m qwenlong_jax.ablation --out runs/ablation                  # 3 seeds (0,1,2)
    python -m qwenlong_jax.ablation --out runs/headline --headline       # the default run, 3 seeds

Ablation: trains `sft_only` once per seed (configs/ablation.py, `seed=k`), then every RL
variant's seed k from that seed's HF export, so the SFT arm has a seed spread too; each run
is a normal training workdir (OUT/<variant>/seed<k>), so re-running the command resumes
unfinished runs and skips finished ones. Every run ends with
the held-out synthetic sweep (the trainer's end-of-phase evaluation: the same examples at the
same lengths for every run, `EVAL_PER_LENGTH` of them per length), which is what is compared.
Writes OUT/results.json, OUT/table.md (variant x context length with the average, mean ± sd over
seeds, then each claim's verdict, then the hard groups of `rl_progressive_retro`: hard prompts
drawn and hard groups trained per step, per seed) and OUT/ablation.png (bars = means, error
bars = sd over seeds, dots = single seeds), and prints each claim's verdict with its gap and
standard error.

Headline (`--headline`): trains configs/default.py (SFT + both RL phases in one run, as
`python -m qwenlong_jax.train` does) once per seed, `--config.seed=k`, with `--eval_per_length`
held-out examples per length, and judges "RL after SFT beats SFT alone" at every length, the
longest first: SFT = the held-out sweep after the SFT phase, RL = the one after the last phase.
Writes OUT/headline.json, OUT/headline.md and OUT/headline.png (SFT vs RL by length, with
the spread over seeds).

Statistics and verdicts: qwenlong_jax/ablation_stats.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

from qwenlong_jax.ablation_stats import (  # noqa: F401  (arm, average_arm, binomial_var,
    aggregate, arm, as_json, average_arm, binomial_var,  # verdict: re-exported for callers)
    claims, claims_markdown, final_accuracy, hard_group_stats, hard_groups_markdown, headline_markdown,
    headline_plot, headline_report, markdown_table, plot, print_claims, verdict)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # config files import `configs.common`
    sys.path.insert(0, _REPO)

RL_VARIANTS = ("rl_single_stage", "rl_progressive", "rl_progressive_retro")


# ----------------------------------------------------------------------------- runs
def shrink(c) -> None:
    """--tiny: a few steps of everything (checks the plumbing; the numbers mean nothing)."""
    for name in c.phases:
        c.phases[name].update(steps=1, batch=2, max_output=8)
    c.rl.update(group_size=2, mini_batch=2, overlong_buffer=2, max_gen_rounds=1)
    c.data.update(synthetic_per_phase=4, eval_lengths=(64, 128), eval_per_length=2, eval_max_new_tokens=8)


def run_config(c, workdir: str, quiet: bool) -> dict:
    """Train config dict `c` in `workdir` (resuming; a finished run is read back) -> summary."""
    from qwenlong_jax.config import from_config_dict
    from qwenlong_jax.run.trainer import Trainer

    done = os.path.join(workdir, "summary.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    return Trainer(from_config_dict(c), workdir, quiet=quiet).run()


def variant_config(variant: str, seed: int, init_from: str | None, tiny: bool = False):
    from configs import ablation as ablation_cfg

    c = ablation_cfg.get_config(variant)
    c.seed = seed
    if init_from:
        c.model.init_from = init_from
    if tiny:
        shrink(c)
    return c


def run_headline(args, seeds: Sequence[int]) -> dict:
    from configs import default

    t0 = time.time()
    summaries = []
    for s in seeds:
        c = default.get_config()
        c.seed = s
        c.data.eval_per_length = args.eval_per_length
        if args.tiny:
            shrink(c)
        wd = os.path.join(args.out, "default", f"seed{s}")
        print(f"[headline] default seed {s} -> {wd}  ({(time.time() - t0) / 60:.1f} min so far)", flush=True)
        summaries.append(run_config(c, wd, args.quiet))
        n_examples = c.data.eval_per_length
    h = headline_report(summaries, n_examples)
    h["minutes_this_invocation"] = round((time.time() - t0) / 60, 1)
    h["seed_list"] = list(seeds)
    md = headline_markdown(h)
    with open(os.path.join(args.out, "headline.json"), "w") as f:
        json.dump(h, f, indent=2)
    with open(os.path.join(args.out, "headline.md"), "w") as f:
        f.write(md + "\n")
    headline_plot(h, os.path.join(args.out, "headline.png"))
    top = h["rows"][h["lengths"][0]]
    print("\n" + md + "\n")
    print(f"  {top['verdict']:<9} RL after SFT beats SFT alone at {h['lengths'][0]} tokens "
          f"(mean ± sd over {len(seeds)} seeds, {n_examples} examples per length; {top['why']})")
    return h


# ----------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated RL seeds")
    ap.add_argument("--variants", default=",".join(RL_VARIANTS), help="RL variants to run")
    ap.add_argument("--headline", action="store_true",
                    help="train configs/default.py per seed and judge RL vs SFT (no ablation)")
    ap.add_argument("--eval_per_length", type=int, default=96, help="--headline: held-out examples per length")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="a few steps per run: checks the plumbing only")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in RL_VARIANTS]
    if bad or not seeds:
        sys.exit(f"error: --variants must be among {', '.join(RL_VARIANTS)} (got {bad}) and --seeds non-empty")
    os.makedirs(args.out, exist_ok=True)
    if args.headline:
        return run_headline(args, seeds)
    from qwenlong_jax.run.metrics import read_metrics

    t0 = time.time()
    results, inits = {"sft_only": []}, {}
    for s in seeds:
        sft_dir = os.path.join(args.out, "sft_only", f"seed{s}")
        print(f"[ablation] sft_only seed {s} -> {sft_dir}", flush=True)
        sft_cfg = variant_config("sft_only", s, None, args.tiny)
        n_examples = sft_cfg.data.eval_per_length
        results["sft_only"].append(final_accuracy(run_config(sft_cfg, sft_dir, args.quiet)))
        inits[s] = os.path.join(sft_dir, "hf")
    hard = {}
    for v in variants:
        results[v] = []
        for s in seeds:
            wd = os.path.join(args.out, v, f"seed{s}")
            print(f"[ablation] {v} seed {s} -> {wd}  ({(time.time() - t0) / 60:.1f} min so far)", flush=True)
            results[v].append(final_accuracy(run_config(variant_config(v, s, inits[s], args.tiny), wd, args.quiet)))
            if v == "rl_progressive_retro":
                hard[f"seed{s}"] = hard_group_stats(read_metrics(wd))
    agg = aggregate(results, n_examples)
    table = markdown_table(agg)
    held = claims(agg)
    minutes = (time.time() - t0) / 60
    report = {"minutes_this_invocation": round(minutes, 1), "seeds": seeds, "n_examples_per_length": n_examples,
              "raw": results, "aggregate": as_json(agg), "claims": held, "hard_groups": hard}
    hard_md = hard_groups_markdown("rl_progressive_retro", hard) if hard else ""
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n\n" + claims_markdown(held) + "\n" + (f"\n{hard_md}\n" if hard_md else ""))
    plot(agg, os.path.join(args.out, "ablation.png"),
         f"Held-out accuracy, mean ± sd over seeds {','.join(map(str, seeds))} "
         f"({n_examples} examples per length)", raw=results)
    print("\n" + table + "\n")
    print_claims(held)
    if hard_md:
        print("\n" + hard_md)
    print(f"\n{minutes:.1f} min; results in {args.out}/ (results.json, table.md, ablation.png)")
    return report


if __name__ == "__main__":
    main()
