"""The headline: RL after SFT vs SFT alone, per context length, from default runs over seeds.

    h = run_headline("runs/headline", seeds=[0, 1, 2], eval_per_length=96)

Trains configs/default.py (SFT + both RL phases in one run, as `python -m qwenlong_jax.train`
does) once per seed, `seed=k`, with `eval_per_length` held-out examples per length, and judges
"RL after SFT beats SFT alone" at every length, the longest first: SFT = the held-out sweep after
the SFT phase, RL = the one after the last phase. Writes OUT/headline.json, OUT/headline.md and
OUT/headline.png (SFT vs RL by length, with the spread over seeds).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence

from qwenlong_jax.experiments import ablation_runs
from qwenlong_jax.experiments.claims import cell, plot
from qwenlong_jax.experiments.stats import Arm, accuracy_at, aggregate, arm, final_accuracy, verdict


def headline_report(summaries: Sequence[dict], n_examples: int, sft_phase: str = "sft") -> dict:
    """RL vs SFT per length from default runs (one summary per seed): SFT = the evaluation
    after `sft_phase`, RL = the last evaluation; the longest length first."""
    sft, rl = [], []
    for s in summaries:
        evs = [e for e in s["evals"] if e["phase"] == sft_phase]
        if not evs:
            raise ValueError(f"a summary has no evaluation after phase {sft_phase!r}")
        sft.append(accuracy_at(evs[-1]))
        rl.append(final_accuracy(s))
    lengths = sorted(rl[0], reverse=True)
    rows = {
        n: {"sft": arm([r[n] for r in sft], n_examples), "rl": arm([r[n] for r in rl], n_examples)} for n in lengths
    }
    return {
        "lengths": lengths,
        "seeds": len(summaries),
        "n_examples": n_examples,
        "minutes": [s.get("minutes") for s in summaries],
        "raw": {"sft": sft, "rl": rl},
        "rows": {
            n: {k: dataclasses.asdict(a) for k, a in r.items()} | verdict(r["rl"], r["sft"]) for n, r in rows.items()
        },
    }


def headline_markdown(h: dict) -> str:
    lines = ["| length | SFT only | after RL | gap (pts) | SE (pts) | verdict |", "|---|---:|---:|---:|---:|---|"]
    for n in h["lengths"]:
        r = h["rows"][n]
        s, q = (Arm(**r[k]) for k in ("sft", "rl"))
        lines.append(
            f"| {n} tok | {cell(s)} | {cell(q)} | {100 * r['gap']:+.1f} | {100 * r['se']:.1f} | {r['verdict']} |"
        )
    return "\n".join(lines)


def headline_plot(h: dict, path: str) -> None:
    """The headline as a picture: per length, the post-SFT and the final sweep (bars: means,
    error bars: sd over seeds, dots: single seeds), drawn by `plot`."""
    per_arm = {"after SFT": h["raw"]["sft"], "after RL": h["raw"]["rl"]}
    plot(
        aggregate(per_arm, h["n_examples"]),
        path,
        f"Default run, held-out accuracy after SFT vs after RL: mean ± sd over {h['seeds']} seeds "
        f"({h['n_examples']} examples per length)",
        raw=per_arm,
    )


def run_headline(out: str, seeds: Sequence[int], eval_per_length: int, tiny: bool = False, quiet: bool = False) -> dict:
    """Every default run (resuming), then the headline; returns what headline.json holds."""
    from configs import default

    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    summaries = []
    for s in seeds:
        c = default.get_config()
        c.seed = s
        c.data.eval_per_length = eval_per_length
        if tiny:
            ablation_runs.shrink(c)
        wd = os.path.join(out, "default", f"seed{s}")
        print(f"[headline] default seed {s} -> {wd}  ({(time.time() - t0) / 60:.1f} min so far)", flush=True)
        summaries.append(ablation_runs.run_config(c, wd, quiet))
        n_examples = c.data.eval_per_length
    h = headline_report(summaries, n_examples)
    h["minutes_this_invocation"] = round((time.time() - t0) / 60, 1)
    h["seed_list"] = list(seeds)
    md = headline_markdown(h)
    with open(os.path.join(out, "headline.json"), "w") as f:
        json.dump(h, f, indent=2)
    with open(os.path.join(out, "headline.md"), "w") as f:
        f.write(md + "\n")
    headline_plot(h, os.path.join(out, "headline.png"))
    top = h["rows"][h["lengths"][0]]
    print("\n" + md + "\n")
    print(
        f"  {top['verdict']:<9} RL after SFT beats SFT alone at {h['lengths'][0]} tokens "
        f"(mean ± sd over {len(seeds)} seeds, {n_examples} examples per length; {top['why']})"
    )
    return h
