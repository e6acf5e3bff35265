"""Evaluation metrics against hand-computed values: SQuAD EM/F1, pass@k, max(rule, judge) over
several gold answers with one judge batch, and the per-benchmark aggregation."""

import math

import pytest

from qwenlong_jax.eval.metrics import (
    ScoreInput,
    extract_prediction,
    pass_at_k,
    score_responses,
    squad_em,
    squad_f1,
    summarize,
)


def test_squad_em_f1():
    assert squad_em("The Eiffel Tower!", "eiffel tower") == 1.0  # articles, case, punctuation
    assert squad_em("Eiffel", "eiffel tower") == 0.0
    # pred {eiffel}, gold {eiffel, tower}: P=1, R=1/2 -> F1 = 2*(1/2)/(3/2) = 2/3
    assert squad_f1("Eiffel", "the Eiffel Tower") == pytest.approx(2 / 3)
    # pred {a1 b b}, gold {b b c}: common {b: 2}: P=2/3, R=2/3 -> 2/3
    assert squad_f1("x b b", "b b c") == pytest.approx(2 / 3)
    assert squad_f1("", "paris") == 0.0 and squad_f1("the", "paris") == 0.0


def test_extract_prediction():
    assert extract_prediction("frames", "<think>the answer is 3</think> So the answer is **Rome**.") == "Rome"
    assert extract_prediction("frames", "the answer is Rome") == ""  # no </think>
    assert extract_prediction("synthetic_long_toc_choices", "</think> The correct answer is (C).") == "C"


def test_pass_at_k():
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    # 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k(5, 3, 3) == 1.0  # n - c = 2 < k
    assert pass_at_k(10, 3, 4) == pytest.approx(1 - math.comb(7, 4) / math.comb(10, 4))
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


class CountingJudge:
    def __init__(self, yes):
        self.yes, self.batches = yes, []

    def score_batch(self, queries):
        self.batches.append([(q.prediction, q.gold) for q in queries])
        return [float((q.prediction, q.gold) in self.yes) for q in queries]


def test_score_responses_max_over_answers_and_judge():
    items = [
        # rule: "nyc" vs "new york city" 0, vs "nyc" 1 -> 1; judge never asked for this item.
        ScoreInput(
            "longbench_hotpotqa",
            "</think> Therefore, the answer is NYC.",
            ("New York City", "NYC"),
            ("New York City", "NYC"),
            "q1",
        ),
        # rule 0 on both answers; judge asked about both, says yes to the second -> score 1.
        # (Word order breaks sub_em: "apple big" is not a substring of "big apple".)
        ScoreInput(
            "frames",
            "</think> Therefore, the answer is Apple Big.",
            ("New York", "Big Apple"),
            ("New York", "Big Apple"),
            "q2",
        ),
        # docmath miss: judged (the reference's judge covers docmath too), judge says no.
        ScoreInput("docmath", "</think> Therefore, the answer is 12.", ("15",), ("15",), "q3"),
        # choice miss: never judged.
        ScoreInput(
            "x_long_toc_choices", "</think> The correct answer is (A).", ("The correct answer is (B)",), ("B",), "q4"
        ),
    ]
    judge = CountingJudge({("Apple Big", "Big Apple")})
    outs = score_responses(items, judge)
    assert judge.batches == [
        [("Apple Big", "New York"), ("Apple Big", "Big Apple"), ("12", "15")]
    ]  # one batch for the whole call
    assert [(o.score, o.rule, o.judge) for o in outs] == [
        (1.0, 1.0, None),
        (1.0, 0.0, 1.0),
        (0.0, 0.0, 0.0),
        (0.0, 0.0, None),
    ]
    # EM/F1: max over answers. Item 1: "nyc" == "nyc". Item 2: EM "apple big" != "big apple";
    # F1 bags {apple, big} == {big, apple}: P=R=1 -> 1; vs {new, york}: 0. Item 3: "12" vs
    # "15". Item 4: "A" vs "B".
    assert [o.em for o in outs] == [1.0, 0.0, 0.0, 0.0]
    assert [o.f1 for o in outs] == [1.0, 1.0, 0.0, 0.0]
    assert score_responses(items[:1], None)[0].judge is None


def test_summarize_means_over_ids_then_samples():
    rows = [
        {"id": "a", "score": 1.0, "rule": 1.0, "judge": None, "em": 1.0, "f1": 1.0},
        {"id": "a", "score": 0.0, "rule": 0.0, "judge": 0.0, "em": 0.0, "f1": 0.5},
        {"id": "b", "score": 1.0, "rule": 0.0, "judge": 1.0, "em": 0.0, "f1": 0.0},
        {"id": "b", "score": 1.0, "rule": 1.0, "judge": None, "em": 1.0, "f1": 1.0},
    ]
    s = summarize(rows, pass_ks=(1, 2, 3))
    assert s["n_ids"] == 2 and s["n_samples"] == 4
    assert s["score"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["rule"] == pytest.approx((0.5 + 0.5) / 2)
    assert s["f1"] == pytest.approx((0.75 + 0.5) / 2)
    assert s["judge_asked"] == pytest.approx(2 / 4)
    # pass@2: a (n=2, c=1) -> 1, b -> 1
    assert s["pass@1"] == pytest.approx(0.75) and s["pass@2"] == 1.0
    assert "pass@3" not in s  # k > n samples: not estimable
