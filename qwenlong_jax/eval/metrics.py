"""Per-response metrics: the paper's score max(rule, judge), SQuAD EM and F1, and pass@k.

    outs = score_responses([ScoreInput(data_source, response, ground_truths, answers, q)], judge)
    outs[i].score, .rule, .judge, .em, .f1, .prediction
    pass_at_k(n, c, k)

Score (docs/recipe.md "Evaluation"): the rule of the data source's family (rewards.dispatch; doc-QA
sub_em, the docmath numeric rule, the choice letter) and, with a judge, max(rule, judge) where
the judge is asked exactly when the hybrid reward would ask it (rewards.needs_judge). With several
gold answers (LongBench), every answer is scored and the maximum taken, for the rule, the judge,
EM and F1 alike (LongBench's own convention). All judge queries of a call go in one batch.

EM/F1 are SQuAD's (normalise: lower case, drop punctuation and articles, collapse spaces; F1 over
whitespace tokens) on the answer the response gives: the text after the last "the answer is" in
the segment after the last `</think>` (the choice letter for multiple choice); a response
without `</think>` or without the phrase predicts "" (EM 0, F1 0). They are reported beside the
score, never mixed into it.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Sequence

from qwenlong_jax.rewards import choice, docqa
from qwenlong_jax.rewards.dispatch import family_of, needs_judge, rule_result
from qwenlong_jax.rewards.hybrid import ask_judge
from qwenlong_jax.rewards.result import RuleResult
from qwenlong_jax.rewards.segment import answer_segment


@dataclasses.dataclass(frozen=True)
class ScoreInput:
    data_source: str
    response: str  # decoded, eos removed
    ground_truths: tuple[str, ...]  # what the rule scorer compares with (one or several)
    answers: tuple[str, ...]  # plain gold answers for EM/F1
    question: str | None = None


@dataclasses.dataclass(frozen=True)
class ScoreOutput:
    score: float  # max(rule, judge) over the gold answers
    rule: float
    judge: float | None  # None when the judge was not asked (no judge, or the rule said 1)
    em: float
    f1: float
    prediction: str


def extract_prediction(data_source: str, response: str) -> str:
    """The answer text EM/F1 read from a response ("" when none)."""
    segment = answer_segment(response)
    if segment is None:
        return ""
    if family_of(data_source) == "choice":
        return choice.extract_letter(segment) or ""
    return docqa.extract_answer(segment) or ""


def squad_em(prediction: str, gold: str) -> float:
    return float(docqa.normalize_answer(prediction) == docqa.normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    pred_toks = docqa.normalize_answer(prediction).split()
    gold_toks = docqa.normalize_answer(gold).split()
    common = collections.Counter(pred_toks) & collections.Counter(gold_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def score_responses(items: Sequence[ScoreInput], judge=None) -> list[ScoreOutput]:
    """Score every item; one `judge.score_batch` call for all the rule misses."""
    rules = [[rule_result(it.data_source, it.response, gt) for gt in it.ground_truths] for it in items]
    asks: list[tuple[int, RuleResult, str | None]] = []
    if judge is not None:
        for i, (it, results) in enumerate(zip(items, rules)):
            if max(float(r.score) for r in results) >= 1:
                continue  # max(rule, judge) is already 1: the hybrid reward never asks here
            asks += [(i, r, it.question) for r in results if needs_judge(it.data_source, r)]
    judged = ask_judge(judge, asks)
    outs = []
    for i, (it, results) in enumerate(zip(items, rules)):
        rule = max(float(r.score) for r in results)
        pred = extract_prediction(it.data_source, it.response)
        outs.append(
            ScoreOutput(
                score=max(rule, judged.get(i, 0.0)),
                rule=rule,
                judge=judged.get(i),
                em=max(squad_em(pred, a) for a in it.answers),
                f1=max(squad_f1(pred, a) for a in it.answers),
                prediction=pred,
            )
        )
    return outs


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k); needs k <= n."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def summarize(rows: Sequence[dict], pass_ks: Sequence[int] = (1,)) -> dict:
    """Aggregate prediction rows (one per (id, sample)) into one benchmark's metrics.

    score/rule/em/f1: mean over ids of the mean over that id's samples (mean@n, in [0, 1]).
    pass@k: mean over ids of the unbiased estimate, "correct" meaning score == 1 (rewards.acc).
    judge_asked: the fraction of samples the judge was asked about.
    """
    by_id: dict[str, list[dict]] = {}
    for row in rows:
        by_id.setdefault(row["id"], []).append(row)
    if not by_id:
        return {"n_ids": 0, "n_samples": 0}
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731

    def per_id(key):
        return mean([mean([float(r[key]) for r in rs]) for rs in by_id.values()])

    n_min = min(len(rs) for rs in by_id.values())
    out = {
        "n_ids": len(by_id),
        "n_samples": sum(len(rs) for rs in by_id.values()),
        "score": per_id("score"),
        "rule": per_id("rule"),
        "em": per_id("em"),
        "f1": per_id("f1"),
        "judge_asked": mean([float(r.get("judge") is not None) for rs in by_id.values() for r in rs]),
        "truncated": mean([float(rs[0].get("truncated", False)) for rs in by_id.values()]),
    }
    for k in pass_ks:
        if k <= n_min:
            out[f"pass@{k}"] = mean(
                [pass_at_k(len(rs), sum(float(r["score"]) == 1.0 for r in rs), k) for rs in by_id.values()]
            )
    return out
