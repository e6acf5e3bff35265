"""The paper's ablation in miniature over several seeds (the command line: qwenlong_jax/cli/ablation.py).

    report = run_ablation("runs/ablation", seeds=[0, 1, 2], variants=RL_VARIANTS)

Trains `sft_only` once per seed (configs/ablation.py, `seed=k`), then every RL variant's seed k
from that seed's HF export, so the SFT arm has a seed spread too; each run is a normal training
workdir (OUT/<variant>/seed<k>), so running it again resumes unfinished runs and skips finished
ones. Every run ends with the held-out synthetic sweep (the trainer's end-of-phase evaluation:
the same examples at the same lengths for every run), which is what is compared. Writes
OUT/results.json, OUT/table.md (variant x context length with the average, mean ± sd over seeds,
then each claim's verdict, then the hard groups of `rl_progressive_retro`) and OUT/ablation.png,
and prints each claim's verdict with its gap and standard error (stats.py, claims.py).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence

from qwenlong_jax.experiments.claims import (
    claims,
    claims_markdown,
    hard_group_stats,
    hard_groups_markdown,
    markdown_table,
    plot,
    print_claims,
)
from qwenlong_jax.experiments.stats import aggregate, as_json, final_accuracy

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO not in sys.path:  # config files import `configs.common`
    sys.path.insert(0, _REPO)

RL_VARIANTS = ("rl_single_stage", "rl_progressive", "rl_progressive_retro")


def shrink(c) -> None:
    """tiny: a few steps of everything (checks the plumbing; the numbers mean nothing)."""
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


def run_ablation(
    out: str, seeds: Sequence[int], variants: Sequence[str] = RL_VARIANTS, tiny: bool = False, quiet: bool = False
) -> dict:
    """Every run of the ablation (resuming), then the report; returns what results.json holds."""
    from qwenlong_jax.run.metrics import read_metrics

    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    results: dict[str, list[dict[int, float]]] = {"sft_only": []}  # variant -> per seed: length -> accuracy
    inits: dict[int, str] = {}
    for s in seeds:
        sft_dir = os.path.join(out, "sft_only", f"seed{s}")
        print(f"[ablation] sft_only seed {s} -> {sft_dir}", flush=True)
        sft_cfg = variant_config("sft_only", s, None, tiny)
        n_examples = sft_cfg.data.eval_per_length
        results["sft_only"].append(final_accuracy(run_config(sft_cfg, sft_dir, quiet)))
        inits[s] = os.path.join(sft_dir, "hf")
    hard = {}
    for v in variants:
        results[v] = []
        for s in seeds:
            wd = os.path.join(out, v, f"seed{s}")
            print(f"[ablation] {v} seed {s} -> {wd}  ({(time.time() - t0) / 60:.1f} min so far)", flush=True)
            results[v].append(final_accuracy(run_config(variant_config(v, s, inits[s], tiny), wd, quiet)))
            if v == "rl_progressive_retro":
                hard[f"seed{s}"] = hard_group_stats(read_metrics(wd))
    agg = aggregate(results, n_examples)
    table = markdown_table(agg)
    held = claims(agg)
    minutes = (time.time() - t0) / 60
    report = {
        "minutes_this_invocation": round(minutes, 1),
        "seeds": list(seeds),
        "n_examples_per_length": n_examples,
        "raw": results,
        "aggregate": as_json(agg),
        "claims": held,
        "hard_groups": hard,
    }
    hard_md = hard_groups_markdown("rl_progressive_retro", hard) if hard else ""
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table + "\n\n" + claims_markdown(held) + "\n" + (f"\n{hard_md}\n" if hard_md else ""))
    plot(
        agg,
        os.path.join(out, "ablation.png"),
        f"Held-out accuracy, mean ± sd over seeds {','.join(map(str, seeds))} ({n_examples} examples per length)",
        raw=results,
    )
    print("\n" + table + "\n")
    print_claims(held)
    if hard_md:
        print("\n" + hard_md)
    print(f"\n{minutes:.1f} min; results in {out}/ (results.json, table.md, ablation.png)")
    return report
