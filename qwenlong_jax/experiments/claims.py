"""The ablation's report: the markdown tables, each claim's verdict, the hard groups of
retrospective sampling, and the plot (the statistics: stats.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qwenlong_jax.experiments.stats import Arm, verdict

# The paper's claims, as (better, worse, statement).
CLAIMS = (
    ("rl_progressive_retro", "sft_only", "RL after SFT beats SFT alone"),
    ("rl_progressive", "rl_single_stage", "progressive context scaling beats one long-context RL phase"),
    ("rl_progressive_retro", "rl_progressive", "retrospective sampling adds on top of progressive scaling"),
)


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
        out.append(
            {
                "claim": text,
                "better": better,
                "worse": worse,
                "better_avg": b["avg"].mean,
                "worse_avg": w["avg"].mean,
                **verdict(b["avg"], w["avg"]),
                "by_length": {n: verdict(b["lengths"][n], w["lengths"][n]) for n in sorted(b["lengths"])},
            }
        )
    return out


def claims_markdown(cl: list[dict]) -> str:
    lines = ["| claim | on | gap (pts) | SE (pts) | verdict |", "|---|---|---:|---:|---|"]
    for c in cl:
        rows = [("avg", c)] + [(f"{n} tok", v) for n, v in c["by_length"].items()]
        for where, v in rows:
            lines.append(
                f"| {c['better']} > {c['worse']} | {where} | {100 * v['gap']:+.1f} | "
                f"{100 * v['se']:.1f} | {v['verdict']} |"
            )
    return "\n".join(lines)


def print_claims(cl: list[dict]) -> None:
    for c in cl:
        print(
            f"  {c['verdict']:<9} {c['claim']} (average over lengths: {c['better']} "
            f"{100 * c['better_avg']:.1f} vs {c['worse']} {100 * c['worse_avg']:.1f}; {c['why']})"
        )
        print(
            "            by length: "
            + "; ".join(
                f"{n} tok {v['verdict']} ({100 * v['gap']:+.1f} ± {100 * v['se']:.1f})"
                for n, v in c["by_length"].items()
            )
        )


def hard_group_stats(rows: Sequence[dict]) -> dict:
    """Retrospective sampling at work in one run, from its metrics rows: over the RL steps with
    a non-empty hard pool, the hard prompts drawn and the hard groups trained per step (mean),
    the groups trained per step, and the hard share of the trained groups."""
    steps = [r for r in rows if r.get("hard_pool", 0) > 0 and "hard_trained" in r]
    if not steps:
        return {"steps": 0}
    kept = sum(r["kept_groups"] for r in steps)
    trained = sum(r["hard_trained"] for r in steps)
    return {
        "steps": len(steps),
        "hard_pool": steps[-1]["hard_pool"],
        "hard_drawn_per_step": float(np.mean([r["hard_drawn"] for r in steps])),
        "hard_trained_per_step": trained / len(steps),
        "kept_per_step": kept / len(steps),
        "hard_share_of_trained": trained / kept if kept else 0.0,
        "steps_without_hard_trained": sum(r["hard_trained"] == 0 for r in steps),
    }


def hard_groups_markdown(variant: str, per_seed: dict[str, dict]) -> str:
    lines = [
        f"Hard groups of `{variant}` (steps with a hard pool):",
        "",
        "| seed | steps | pool | hard drawn / step | hard trained / step | trained / step | hard share |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for seed, h in per_seed.items():
        if not h["steps"]:
            lines.append(f"| {seed} | 0 | | | | | |")
            continue
        lines.append(
            f"| {seed} | {h['steps']} | {h['hard_pool']:.0f} | {h['hard_drawn_per_step']:.2f} | "
            f"{h['hard_trained_per_step']:.2f} | {h['kept_per_step']:.2f} | "
            f"{100 * h['hard_share_of_trained']:.0f}% |"
        )
    return "\n".join(lines)


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
        ax.bar(
            xs,
            [100 * x.mean for x in arms],
            width,
            yerr=yerr,
            capsize=3,
            label=f"{v} (n={a['seeds']})",
            color=f"C{i}",
            alpha=0.8,
        )
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
