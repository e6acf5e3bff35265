"""`compute_score`: pick the rule family from `data_source`, score the answer segment.

docs/rewards.md section 0. Case-sensitive substring tests, in order: `long_toc_choices` ->
multiple choice, else `docmath` -> docmath, else `multihoprag` / `musique` -> doc-QA.
Departure: any other source is scored as doc-QA (the reference raises NotImplementedError);
our own data sources use the doc-QA format.

The judge (see judge_core.py) is asked only for doc-QA and docmath (as in the reference), only
when the response's answer parsed and the rule score is below 1; the reward is max(rule, judge).
`compute_score` has no question text, so the judge gets question=None; `hybrid.hybrid_scores`
is the batched path that passes questions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from qwenlong_jax.rewards import choice, docmath, docqa
from qwenlong_jax.rewards.result import RuleResult
from qwenlong_jax.rewards.segment import answer_segment

Family = Literal["choice", "docmath", "docqa"]

_SCORERS: dict[Family, Callable[[str, str], RuleResult]] = {
    "choice": choice.score_segment,
    "docmath": docmath.score_segment,
    "docqa": docqa.score_segment,
}
JUDGED_FAMILIES: frozenset[Family] = frozenset({"docmath", "docqa"})


def family_of(data_source: str) -> Family:
    """The rule family of a data source (unknown sources -> "docqa")."""
    if "long_toc_choices" in data_source:
        return "choice"
    if "docmath" in data_source:
        return "docmath"
    return "docqa"  # "multihoprag" / "musique", and (departure) everything else


def rule_result(data_source: str, response: str, ground_truth: str) -> RuleResult:
    """The rule score with the answers it compared. No `</think>` / empty segment -> int 0."""
    segment = answer_segment(response)
    if segment is None:
        return RuleResult(0)
    return _SCORERS[family_of(data_source)](segment, ground_truth)


def rule_score(data_source: str, response: str, ground_truth: str) -> int | float:
    """The rule score in the family's own type (see docs/rewards.md "Return types")."""
    return rule_result(data_source, response, ground_truth).score


def needs_judge(data_source: str, result: RuleResult) -> bool:
    """Whether the hybrid reward asks the judge about this rule result."""
    return (
        family_of(data_source) in JUDGED_FAMILIES
        and bool(result.prediction)
        and result.gold is not None
        and result.score < 1
    )


def compute_score(data_source: str, response: str, ground_truth: str, judge=None) -> float:
    """The reward before overlong shaping: rule score, or max(rule, judge) when a judge is given.

    `judge` is any object with `score(prediction, gold, question=None) -> float` (the judges in
    this package never raise; failures count 0). `response` must already have its eos text
    removed (`segment.strip_eos`).
    """
    result = rule_result(data_source, response, ground_truth)
    if judge is not None and needs_judge(data_source, result):
        return float(max(result.score, judge.score(result.prediction, result.gold, None)))
    return float(result.score)


def acc(score: float) -> bool:
    """The reference's `acc`: the (hybrid) score before overlong shaping equals 1.0. DAPO's
    dynamic sampling filters groups on this, not on the shaped reward."""
    return score == 1.0
