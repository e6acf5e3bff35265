"""Batched hybrid reward: rule scores, then ONE judge batch for the items the rule missed.

reward = max(rule, judge); the judge is asked only for doc-QA / docmath items whose response
answer parsed and whose rule score is below 1 (dispatch.needs_judge). The question text, when
given, goes into the judge prompt and the cache key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from qwenlong_jax.rewards.dispatch import needs_judge, rule_result
from qwenlong_jax.rewards.judge_core import JudgeQuery
from qwenlong_jax.rewards.result import RuleResult


@dataclasses.dataclass(frozen=True)
class ScoreItem:
    """One response to score. `response` must already have its eos text removed."""

    data_source: str
    response: str
    ground_truth: str
    question: str | None = None


def ask_judge(judge, asks: Sequence[tuple[int, RuleResult, str | None]]) -> dict[int, float]:
    """One `judge.score_batch` call for the rule misses `asks` = (index, rule result, question),
    each result one that `needs_judge` passed -> index -> the largest verdict given for it (an
    index may be asked several times, once per gold answer). Shared by the reward and the eval."""
    if not asks:
        return {}
    queries = []
    for _, r, question in asks:
        assert r.prediction is not None and r.gold is not None  # needs_judge: both parsed
        queries.append(JudgeQuery(r.prediction, r.gold, question))
    verdicts = judge.score_batch(queries)
    if len(verdicts) != len(asks):
        raise ValueError(f"judge.score_batch returned {len(verdicts)} scores for {len(asks)}")
    judged: dict[int, float] = {}
    for (i, _, _), v in zip(asks, verdicts):
        judged[i] = max(judged.get(i, 0.0), float(v))
    return judged


def hybrid_scores(items: Sequence[ScoreItem], judge=None) -> list[float]:
    """Scores (floats) in order; `judge` has `score_batch(list[JudgeQuery]) -> list[float]`."""
    results = [rule_result(it.data_source, it.response, it.ground_truth) for it in items]
    scores = [float(r.score) for r in results]
    if judge is None:
        return scores
    asks = [(i, r, it.question) for i, (it, r) in enumerate(zip(items, results)) if needs_judge(it.data_source, r)]
    judged = ask_judge(judge, asks)
    return [max(s, judged[i]) if i in judged else s for i, s in enumerate(scores)]
