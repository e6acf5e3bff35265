"""Run the paper's ablation in miniature and report it (issue 9).

    python -m qwenlong_jax.ablation --out runs/ablation [--seeds 0,1] [--variants ...]

Trains `sft_only` once (configs/ablation.py), then every RL variant from its HF export, once
per seed; each run is a normal training workdir (OUT/<variant>/seed<k>), so re-running the
command resumes unfinished runs and skips finished ones. Every run ends with the held-out
synthetic sweep at the same lengths on the same examples (the trainer's end-of-phase
evaluation), which is what is compared. Writes OUT/results.json, OUT/table.md (variant x
context length, with the average; mean +- spread over seeds) and OUT/ablation.png, and prints
which of the paper's three claims held at this scale.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:  # config files import `configs.common`
    sys.path.insert(0, _REPO)

RL_VARIANTS = ("rl_single_stage", "rl_progressive", "rl_progressive_retro")
# The paper's claims, as (better, worse, statement): compared on the average over lengths.
CLAIMS = (
    ("rl_progressive_retro", "sft_only", "RL after SFT beats SFT alone"),
    ("rl_progressive", "rl_single_stage", "progressive context scaling beats one long-context RL phase"),
    ("rl_progressive_retro", "rl_progressive", "retrospective sampling adds on top of progressive scaling"),
)


def shrink(c) -> None:
    """--tiny: a few steps of everything (checks the plumbing; the numbers mean nothing)."""
    for name in c.phases:
        c.phases[name].update(steps=1, batch=2, max_output=8)
    c.rl.update(group_size=2, mini_batch=2, overlong_buffer=2, max_gen_rounds=1)
    c.data.update(synthetic_per_phase=4, eval_lengths=(64, 128), eval_per_length=2, eval_max_new_tokens=8)


def run_variant(variant: str, workdir: str, seed: int, init_from: str | None, quiet: bool,
                tiny: bool = False) -> dict:
    """Train one variant in `workdir` (resuming) and return its summary."""
    from configs import ablation as ablation_cfg
    from qwenlong_jax.config import from_config_dict
    from qwenlong_jax.trainer import Trainer

    done = os.path.join(workdir, "summary.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    c = ablation_cfg.get_config(variant)
    c.seed = seed
    if init_from:
        c.model.init_from = init_from
    if tiny:
        shrink(c)
    return Trainer(from_config_dict(c), workdir, quiet=quiet).run()


def final_accuracy(summary: dict) -> dict[int, float]:
    """Held-out accuracy by length at the run's last evaluation."""
    last = summary["evals"][-1]
    return {int(k.split("@")[1]): float(v) for k, v in last.items() if k.startswith("heldout/acc@")}


def aggregate(results: dict[str, list[dict[int, float]]]) -> dict[str, dict]:
    """variant -> {lengths: {n: (mean, std)}, avg: (mean, std), seeds}; the average over
    lengths is taken per seed first, so its spread is the spread of per-seed averages."""
    out = {}
    for v, runs in results.items():
        lengths = sorted(runs[0])
        by_len = {n: (float(np.mean([r[n] for r in runs])), float(np.std([r[n] for r in runs])))
                  for n in lengths}
        avgs = [float(np.mean([r[n] for n in lengths])) for r in runs]
        out[v] = {"lengths": by_len, "avg": (float(np.mean(avgs)), float(np.std(avgs))), "seeds": len(runs)}
    return out


def _cell(mean: float, std: float, n: int) -> str:
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n > 1 else "")


def markdown_table(agg: dict[str, dict]) -> str:
    lengths = sorted(next(iter(agg.values()))["lengths"])
    head = "| variant | seeds | " + " | ".join(f"{n} tok" for n in lengths) + " | avg |"
    lines = [head, "|" + "---|" * (len(lengths) + 3)]
    for v, a in agg.items():
        cells = [_cell(*a["lengths"][n], a["seeds"]) for n in lengths]
        lines.append(f"| {v} | {a['seeds']} | " + " | ".join(cells) + f" | {_cell(*a['avg'], a['seeds'])} |")
    return "\n".join(lines)


def claims(agg: dict[str, dict]) -> list[dict]:
    """Each claim with both averages and whether it held (strictly better, beyond the spread
    over seeds when there are several)."""
    out = []
    for better, worse, text in CLAIMS:
        if better not in agg or worse not in agg:
            continue
        (mb, sb), (mw, sw) = agg[better]["avg"], agg[worse]["avg"]
        out.append({"claim": text, "better": better, "worse": worse, "better_avg": mb, "worse_avg": mw,
                    "held": bool(mb - mw > max(sb, sw))})
    return out


def plot(agg: dict[str, dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted(next(iter(agg.values()))["lengths"])
    cols = [str(n) for n in lengths] + ["avg"]
    width = 0.8 / len(agg)
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (v, a) in enumerate(agg.items()):
        means = [a["lengths"][n][0] for n in lengths] + [a["avg"][0]]
        stds = [a["lengths"][n][1] for n in lengths] + [a["avg"][1]]
        xs = np.arange(len(cols)) + (i - (len(agg) - 1) / 2) * width
        ax.bar(xs, 100 * np.asarray(means), width, yerr=100 * np.asarray(stds) if a["seeds"] > 1 else None,
               capsize=3, label=f"{v} (n={a['seeds']})", color=f"C{i}")
    ax.set_xticks(np.arange(len(cols)), [f"{c} tok" if c != "avg" else c for c in cols])
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--seeds", default="0", help="comma-separated RL seeds")
    ap.add_argument("--variants", default=",".join(RL_VARIANTS), help="RL variants to run")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="a few steps per run: checks the plumbing only")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in RL_VARIANTS]
    if bad or not seeds:
        sys.exit(f"error: --variants must be among {', '.join(RL_VARIANTS)} (got {bad}) and --seeds non-empty")
    t0 = time.time()
    sft_dir = os.path.join(args.out, "sft_only")
    print(f"[ablation] sft_only -> {sft_dir}", flush=True)
    results = {"sft_only": [final_accuracy(run_variant("sft_only", sft_dir, 0, None, args.quiet, args.tiny))]}
    init = os.path.join(sft_dir, "hf")
    for v in variants:
        results[v] = []
        for s in seeds:
            wd = os.path.join(args.out, v, f"seed{s}")
            print(f"[ablation] {v} seed {s} -> {wd}  ({(time.time() - t0) / 60:.1f} min so far)", flush=True)
            results[v].append(final_accuracy(run_variant(v, wd, s, init, args.quiet, args.tiny)))
    agg = aggregate(results)
    table = markdown_table(agg)
    held = claims(agg)
    minutes = (time.time() - t0) / 60
    report = {"minutes_this_invocation": round(minutes, 1), "seeds": seeds, "raw": results,
              "aggregate": agg, "claims": held}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    plot(agg, os.path.join(args.out, "ablation.png"),
         f"Held-out accuracy after each variant (seeds: {','.join(map(str, seeds))})")
    print("\n" + table + "\n")
    for c in held:
        print(f"  {'HELD    ' if c['held'] else 'NOT HELD'}  {c['claim']}: {c['better']} "
              f"{100 * c['better_avg']:.1f} vs {c['worse']} {100 * c['worse_avg']:.1f}")
    print(f"\n{minutes:.1f} min; results in {args.out}/ (results.json, table.md, ablation.png)")
    return report


if __name__ == "__main__":
    main()
