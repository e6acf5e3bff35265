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


@dataclasses.dataclass(frozen=True)
class ScoreItem:
    """One response to score. `response` must already have its eos text removed."""

    data_source: str
    response: str
    ground_truth: str
    question: str | None = None


def hybrid_scores(items: Sequence[ScoreItem], judge=None) -> list[float]:
    """Scores (floats) in order; `judge` has `score_batch(list[JudgeQuery]) -> list[float]`."""
    results = [rule_result(it.data_source, it.response, it.ground_truth) for it in items]
    scores = [float(r.score) for r in results]
    if judge is None:
        return scores
    ask = [i for i, (it, r) in enumerate(zip(items, results)) if needs_judge(it.data_source, r)]
    if ask:
        queries = []
        for i in ask:
            prediction, gold = results[i].prediction, results[i].gold
            assert prediction is not None and gold is not None  # needs_judge: both parsed
            queries.append(JudgeQuery(prediction, gold, items[i].question))
        verdicts = judge.score_batch(queries)
        if len(verdicts) != len(ask):
            raise ValueError(f"judge.score_batch returned {len(verdicts)} scores for {len(ask)}")
        for i, verdict in zip(ask, verdicts):
            scores[i] = max(scores[i], float(verdict))
    return scores
