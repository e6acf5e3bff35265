"""The ablation's statistics and verdicts: arms, the gap test, tables, claims and the plot.

Statistics (one definition for both modes). An *arm* is one variant's accuracy at one length
(or averaged over lengths) from n seeds, each measured on the same N held-out examples:
  mean  m = the mean over seeds;  sd = the sample standard deviation over seeds (ddof=1).
  SE²(arm) = sd² / n  +  B(m, N)
    - the first term is the seed (run-to-run) spread of the mean; with ONE seed it is unknown
      and left out: the SE is then the binomial term alone, which understates the error (the
      verdict line says so);
    - the second is the binomial error of accuracy on a finite example set,
      B(m, N) = p (1 - p) / (N + 4) with p = (m N + 2) / (N + 4): the textbook m (1 - m) / N
      with the Agresti-Coull adjustment (two successes and two failures added), so that 0 of
      N or N of N still carries an error instead of none. It is not divided by n: every seed
      is scored on the same N examples, so seeds do not average it away. For the average over
      L lengths it is (1/L²) Σ_l B(m_l, N).
  gap = m(better) - m(worse),   SE(gap) = sqrt(SE²(better) + SE²(worse)).
  (Both arms are scored on the same examples, so their binomial errors are positively
  correlated and the sum over-states SE(gap): the test is conservative.)
Verdict: HELD if gap > 2 SE; REVERSED if gap < -2 SE (significantly the other way); NOT SHOWN
otherwise. Claims are judged on the average over lengths and, beside it, at each length.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

# The paper's claims, as (better, worse, statement).
CLAIMS = (
    ("rl_progressive_retro", "sft_only", "RL after SFT beats SFT alone"),
    ("rl_progressive", "rl_single_stage", "progressive context scaling beats one long-context RL phase"),
    ("rl_progressive_retro", "rl_progressive", "retrospective sampling adds on top of progressive scaling"),
)
HELD, NOT_SHOWN, REVERSED = "HELD", "NOT SHOWN", "REVERSED"


# ----------------------------------------------------------------------------- statistics
@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of a comparison: the mean over seeds, their sd (None with one seed), the seed
    count and the binomial variance of the accuracy on the finite example set."""

    mean: float
    sd: float | None
    seeds: int
    binom_var: float

    @property
    def se2(self) -> float:
        return (self.sd ** 2 / self.seeds if self.sd is not None else 0.0) + self.binom_var


def binomial_var(m: float, n_examples: int) -> float:
    """Variance of an accuracy m measured on n examples, Agresti-Coull adjusted (docstring)."""
    p = (m * n_examples + 2) / (n_examples + 4)
    return p * (1 - p) / (n_examples + 4)


def arm(per_seed: Sequence[float], n_examples: int) -> Arm:
    """An arm at one length: per-seed accuracies, each on the same `n_examples` examples."""
    x = np.asarray(per_seed, np.float64)
    m = float(x.mean())
    return Arm(m, float(x.std(ddof=1)) if len(x) > 1 else None, len(x), binomial_var(m, n_examples))


def average_arm(per_seed: Sequence[dict[int, float]], n_examples: int) -> Arm:
    """The arm of the average over lengths: per-seed averages; binomial variance of a mean of
    L independent per-length accuracies, (1/L²) Σ B(m_l, N)."""
    lengths = sorted(per_seed[0])
    avgs = np.asarray([np.mean([r[n] for n in lengths]) for r in per_seed])
    means = [float(np.mean([r[n] for r in per_seed])) for n in lengths]
    binom = sum(binomial_var(m, n_examples) for m in means) / len(lengths) ** 2
    return Arm(float(avgs.mean()), float(avgs.std(ddof=1)) if len(avgs) > 1 else None, len(avgs), binom)


def verdict(better: Arm, worse: Arm) -> dict:
    """HELD / NOT SHOWN / REVERSED for 'better beats worse' (module docstring), with why."""
    gap = better.mean - worse.mean
    se = math.sqrt(better.se2 + worse.se2)
    if gap > 2 * se:
        v = HELD
    elif gap < -2 * se:
        v = REVERSED
    else:
        v = NOT_SHOWN
    seed_known = better.sd is not None and worse.sd is not None
    rel = ">" if gap > 2 * se else "<" if gap < -2 * se else "within ±"
    why = f"gap {100 * gap:+.1f} pts {rel} 2 SE = {200 * se:.1f} pts (SE {100 * se:.1f})"
    if not seed_known:
        one = [name for name, a in (("better", better), ("worse", worse)) if a.sd is None]
        why += (f"; SE binomial only for the {' and '.join(one)} arm{'s' if len(one) > 1 else ''} "
                "(one seed: run-to-run spread unknown)")
    return {"verdict": v, "gap": gap, "se": se, "seed_term_known": seed_known, "why": why}


def accuracy_at(ev: dict) -> dict[int, float]:
    """Held-out accuracy by length from one evaluation record of a summary."""
    return {int(k.split("@")[1]): float(v) for k, v in ev.items() if k.startswith("heldout/acc@")}


def final_accuracy(summary: dict) -> dict[int, float]:
    """Held-out accuracy by length at the run's last evaluation."""
    return accuracy_at(summary["evals"][-1])


# ----------------------------------------------------------------------------- report
def aggregate(results: dict[str, list[dict[int, float]]], n_examples: int) -> dict[str, dict]:
    """variant -> {lengths: {n: Arm}, avg: Arm, seeds}; the average over lengths is taken per
    seed first, so its spread is the spread of per-seed averages."""
    out = {}
    for v, runs in results.items():
        lengths = sorted(runs[0])
        out[v] = {"lengths": {n: arm([r[n] for r in runs], n_examples) for n in lengths},
                  "avg": average_arm(runs, n_examples), "seeds": len(runs)}
    return out


def cell(a: Arm) -> str:
    return f"{100 * a.mean:.1f}" + (f" ± {100 * a.sd:.1f}" if a.sd is not None else "")


def markdown_table(agg: dict[str, dict]) -> str:
    lengths = sorted(next(iter(agg.values()))["lengths"])
    head = "| variant | seeds | " + " | ".join(f"{n} tok" for n in lengths) + " | avg |"
    lines = [head, "|" + "---|" * (len(lengths) + 3)]
    for v, a in agg.items():
        cells = [cell(a["lengths"][n]) for n in lengths]
        lines.append(f"| {v} | {a['seeds']} | " + " | ".join(cells) + f" | {cell(a['avg'])} |")
    return "\n".join(lines)


def claims(agg: dict[str, dict]) -> list[dict]:
    """Each claim judged on the average over lengths, and at each length beside it."""
    out = []
    for better, worse, text in CLAIMS:
        if better not in agg or worse not in agg:
            continue
        b, w = agg[better], agg[worse]
        out.append({"claim": text, "better": better, "worse": worse, "better_avg": b["avg"].mean,
                    "worse_avg": w["avg"].mean, **verdict(b["avg"], w["avg"]),
                    "by_length": {n: verdict(b["lengths"][n], w["lengths"][n]) for n in sorted(b["lengths"])}})
    return out


def claims_markdown(cl: list[dict]) -> str:
    lines = ["| claim | on | gap (pts) | SE (pts) | verdict |", "|---|---|---:|---:|---|"]
    for c in cl:
        rows = [("avg", c)] + [(f"{n} tok", v) for n, v in c["by_length"].items()]
        for where, v in rows:
            lines.append(f"| {c['better']} > {c['worse']} | {where} | {100 * v['gap']:+.1f} | "
                         f"{100 * v['se']:.1f} | {v['verdict']} |")
    return "\n".join(lines)


def print_claims(cl: list[dict]) -> None:
    for c in cl:
        print(f"  {c['verdict']:<9} {c['claim']} (average over lengths: {c['better']} "
              f"{100 * c['better_avg']:.1f} vs {c['worse']} {100 * c['worse_avg']:.1f}; {c['why']})")
        print("            by length: " + "; ".join(f"{n} tok {v['verdict']} ({100 * v['gap']:+.1f} ± "
                                                 f"{100 * v['se']:.1f})" for n, v in c["by_length"].items()))


def plot(agg: dict[str, dict], path: str, title: str, raw: dict | None = None) -> None:
    """Bars: mean over seeds; error bars: sd over seeds; dots: the single seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted(next(iter(agg.values()))["lengths"])
    cols = [str(n) for n in lengths] + ["avg"]
    width = 0.8 / len(agg)
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (v, a) in enumerate(agg.items()):
        arms = [a["lengths"][n] for n in lengths] + [a["avg"]]
        xs = np.arange(len(cols)) + (i - (len(agg) - 1) / 2) * width
        yerr = [100 * x.sd for x in arms] if a["seeds"] > 1 else None
        ax.bar(xs, [100 * x.mean for x in arms], width, yerr=yerr, capsize=3,
               label=f"{v} (n={a['seeds']})", color=f"C{i}", alpha=0.8)
        if raw and a["seeds"] > 1:
            for r in raw[v]:
                ys = [r[n] for n in lengths] + [float(np.mean([r[n] for n in lengths]))]
                ax.plot(xs, 100 * np.asarray(ys), "k.", ms=3)
    ax.set_xticks(np.arange(len(cols)), [f"{c} tok" if c != "avg" else c for c in cols])
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def as_json(agg: dict[str, dict]) -> dict:
    return {v: {"seeds": a["seeds"], "avg": dataclasses.asdict(a["avg"]),
                "lengths": {n: dataclasses.asdict(x) for n, x in a["lengths"].items()}} for v, a in agg.items()}


# ----------------------------------------------------------------------------- hard groups
def hard_group_stats(rows: Sequence[dict]) -> dict:
    """Retrospective sampling at work in one run, from its metrics rows: over the RL steps with
    a non-empty hard pool, the hard prompts drawn and the hard groups trained per step (mean),
    the groups trained per step, and the hard share of the trained groups."""
    steps = [r for r in rows if r.get("hard_pool", 0) > 0 and "hard_trained" in r]
    if not steps:
        return {"steps": 0}
    kept = sum(r["kept_groups"] for r in steps)
    trained = sum(r["hard_trained"] for r in steps)
    return {"steps": len(steps), "hard_pool": steps[-1]["hard_pool"],
            "hard_drawn_per_step": float(np.mean([r["hard_drawn"] for r in steps])),
            "hard_trained_per_step": trained / len(steps), "kept_per_step": kept / len(steps),
            "hard_share_of_trained": trained / kept if kept else 0.0,
            "steps_without_hard_trained": sum(r["hard_trained"] == 0 for r in steps)}


def hard_groups_markdown(variant: str, per_seed: dict[str, dict]) -> str:
    lines = [f"Hard groups of `{variant}` (steps with a hard pool):", "",
             "| seed | steps | pool | hard drawn / step | hard trained / step | trained / step | hard share |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for seed, h in per_seed.items():
        if not h["steps"]:
            lines.append(f"| {seed} | 0 | | | | | |")
            continue
        lines.append(f"| {seed} | {h['steps']} | {h['hard_pool']:.0f} | {h['hard_drawn_per_step']:.2f} | "
                     f"{h['hard_trained_per_step']:.2f} | {h['kept_per_step']:.2f} | "
                     f"{100 * h['hard_share_of_trained']:.0f}% |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- headline
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
    rows = {n: {"sft": arm([r[n] for r in sft], n_examples), "rl": arm([r[n] for r in rl], n_examples)}
            for n in lengths}
    return {"lengths": lengths, "seeds": len(summaries), "n_examples": n_examples,
            "minutes": [s.get("minutes") for s in summaries], "raw": {"sft": sft, "rl": rl},
            "rows": {n: {k: dataclasses.asdict(a) for k, a in r.items()} | verdict(r["rl"], r["sft"])
                     for n, r in rows.items()}}


def headline_markdown(h: dict) -> str:
    lines = ["| length | SFT only | after RL | gap (pts) | SE (pts) | verdict |", "|---|---:|---:|---:|---:|---|"]
    for n in h["lengths"]:
        r = h["rows"][n]
        s, q = (Arm(**r[k]) for k in ("sft", "rl"))
        lines.append(f"| {n} tok | {cell(s)} | {cell(q)} | {100 * r['gap']:+.1f} | {100 * r['se']:.1f} | "
                     f"{r['verdict']} |")
    return "\n".join(lines)


def headline_plot(h: dict, path: str) -> None:
    """The headline as a picture: per length, the post-SFT and the final sweep (bars: means,
    error bars: sd over seeds, dots: single seeds), drawn by `plot`."""
    per_arm = {"after SFT": h["raw"]["sft"], "after RL": h["raw"]["rl"]}
    plot(aggregate(per_arm, h["n_examples"]), path,
         f"Default run, held-out accuracy after SFT vs after RL: mean ± sd over {h['seeds']} seeds "
         f"({h['n_examples']} examples per length)", raw=per_arm)
