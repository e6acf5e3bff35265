"""The ablation's statistics: arms, the gap test and its verdict, the aggregate over seeds.

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
from collections.abc import Sequence

import numpy as np

HELD, NOT_SHOWN, REVERSED = "HELD", "NOT SHOWN", "REVERSED"


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
        return (self.sd**2 / self.seeds if self.sd is not None else 0.0) + self.binom_var


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
        why += (
            f"; SE binomial only for the {' and '.join(one)} arm{'s' if len(one) > 1 else ''} "
            "(one seed: run-to-run spread unknown)"
        )
    return {"verdict": v, "gap": gap, "se": se, "seed_term_known": seed_known, "why": why}


def accuracy_at(ev: dict) -> dict[int, float]:
    """Held-out accuracy by length from one evaluation record of a summary."""
    return {int(k.split("@")[1]): float(v) for k, v in ev.items() if k.startswith("heldout/acc@")}


def final_accuracy(summary: dict) -> dict[int, float]:
    """Held-out accuracy by length at the run's last evaluation."""
    return accuracy_at(summary["evals"][-1])


def aggregate(results: dict[str, list[dict[int, float]]], n_examples: int) -> dict[str, dict]:
    """variant -> {lengths: {n: Arm}, avg: Arm, seeds}; the average over lengths is taken per
    seed first, so its spread is the spread of per-seed averages."""
    out = {}
    for v, runs in results.items():
        lengths = sorted(runs[0])
        out[v] = {
            "lengths": {n: arm([r[n] for r in runs], n_examples) for n in lengths},
            "avg": average_arm(runs, n_examples),
            "seeds": len(runs),
        }
    return out


def as_json(agg: dict[str, dict]) -> dict:
    return {
        v: {
            "seeds": a["seeds"],
            "avg": dataclasses.asdict(a["avg"]),
            "lengths": {n: dataclasses.asdict(x) for n, x in a["lengths"].items()},
        }
        for v, a in agg.items()
    }
