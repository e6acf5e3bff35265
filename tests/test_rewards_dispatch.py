"""compute_score: dispatch (section 0), the answer segment (section 1), ground-truth forms
(section 2), eos stripping, acc, and the hybrid rule + judge reward."""

import pytest

from qwenlong_jax import rewards
from qwenlong_jax.rewards import JudgeQuery, ScoreItem, hybrid_scores

# One response/gold pair per family that scores 1 under that family only.
MC = ("</think>The correct answer is (B)", "The correct answer is (B)")
MATH = ("</think>Therefore, the answer is 0.0011", "Therefore, the answer is 0.0019")  # ceil rule
QA_ONLY = ("</think>Therefore, the answer is 15", "Therefore, the answer is 5")  # 5 in 15: docqa


@pytest.mark.parametrize(
    "source, family",
    [
        ("long_toc_choices", "choice"),
        ("x_long_toc_choices_docmath", "choice"),
        ("docmath", "docmath"),
        ("docmath_musique", "docmath"),
        ("my_docmath_v2", "docmath"),
        ("multihoprag", "docqa"),
        ("musique", "docqa"),
        ("MuSiQue", "docqa"),
        ("DocMath", "docqa"),  # case-sensitive: not docmath; unknown -> docqa (ref raises)
        ("Long_Toc_Choices", "docqa"),
        ("synthetic_needle", "docqa"),
        ("", "docqa"),
    ],
)
def test_family_of(source, family):
    assert rewards.family_of(source) == family


def test_dispatch_order_changes_scores():
    # docmath rules on a docqa pair: 15 vs 5 is no numeric match; docqa: "5" in "15".
    assert rewards.compute_score("musique", *QA_ONLY) == 1.0
    assert rewards.compute_score("docmath_musique", *QA_ONLY) == 0.0
    assert rewards.compute_score("docmath", *MATH) == 1.0
    assert rewards.compute_score("musique", *MATH) == 0.0
    assert rewards.compute_score("x_long_toc_choices_docmath", *MC) == 1.0
    assert rewards.compute_score("docmath", *MC) == 0.0


# --- the answer segment ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, expected",
    [
        ("Therefore, the answer is Paris", 0.0),  # no </think>
        ("<think>x</THINK>Therefore, the answer is Paris", 0.0),
        ("<think>x</ think>Therefore, the answer is Paris", 0.0),
        ("</think>Therefore, the answer is Paris", 1.0),  # <think> never checked
        ("<think>the answer is Paris</think>the answer is Rome", 0.0),  # think block ignored
        ("<think>the answer is Paris</think>", 0.0),  # empty segment
        ("<think>the answer is Paris</think> \n\t\u3000", 0.0),  # Unicode whitespace only
        ("a</think>b</think>c</think>\u2003Therefore, the answer is Paris\u2003", 1.0),
        ("</think>the answer is Paris</think>the answer is Rome", 0.0),  # last tag counts
    ],
)
def test_answer_segment_rules(response, expected):
    assert rewards.compute_score("musique", response, "the answer is Paris") == expected


def test_answer_segment_helper():
    assert rewards.answer_segment("a</think> b </think>  c d \n") == "c d"
    assert rewards.answer_segment("no tag") is None
    assert rewards.answer_segment("x</think> \n") is None


def test_strip_eos():
    eos = "<｜end▁of▁sentence｜>"
    assert rewards.strip_eos("</think>the answer is 5" + eos, eos) == "</think>the answer is 5"
    assert rewards.strip_eos("a" + eos + eos, eos) == "a" + eos  # one suffix only
    assert rewards.strip_eos(eos + "a", eos) == eos + "a"  # suffix only
    assert rewards.strip_eos("abc", "") == "abc"
    assert rewards.strip_eos("abc", None) == "abc"
    # Without the strip, "New York</s>" normalises to "new yorks", not contained in the gold.
    raw = "</think>the answer is New York</s>"
    gold = "the answer is New York City"
    assert rewards.compute_score("musique", raw, gold) == 0.0
    assert rewards.compute_score("musique", rewards.strip_eos(raw, "</s>"), gold) == 1.0


def test_compute_score_returns_float_and_acc():
    for pair, source in ((MC, "long_toc_choices"), (MATH, "docmath"), (QA_ONLY, "musique")):
        score = rewards.compute_score(source, *pair)
        assert type(score) is float and score == 1.0 and rewards.acc(score)
    assert rewards.compute_score("docmath", "no tag", "the answer is 1") == 0.0
    assert not rewards.acc(0.0) and not rewards.acc(0.999) and rewards.acc(1)


def test_rule_result_keeps_the_compared_answers():
    r = rewards.rule_result("docmath", "</think>so the answer is $1,250.", "the answer is 1250")
    assert (r.score, r.prediction, r.gold) == (1, "$1250", "1250")
    r = rewards.rule_result("musique", "</think>the answer is **Paris**.", "Paris")
    assert (r.score, r.prediction, r.gold) == (1.0, "Paris", "Paris")


# --- hybrid reward -----------------------------------------------------------------------------


class FakeJudge:
    """Says YES when the gold's first letter occurs in the prediction; records what it was asked."""

    def __init__(self):
        self.asked: list[JudgeQuery] = []

    def _verdict(self, q: JudgeQuery) -> float:
        return float(q.gold[:1].lower() in q.prediction.lower())

    def score(self, prediction, gold, question=None):
        return self.score_batch([JudgeQuery(prediction, gold, question)])[0]

    def score_batch(self, queries):
        self.asked.extend(queries)
        return [self._verdict(q) for q in queries]


def test_compute_score_with_judge_only_when_rule_misses():
    judge = FakeJudge()
    # rule 1 -> judge not asked
    assert rewards.compute_score("musique", "</think>the answer is Paris", "the answer is Paris", judge=judge) == 1.0
    assert judge.asked == []
    # rule 0, judge yes -> 1; it gets the parsed answers and no question
    assert (
        rewards.compute_score(
            "musique", "</think>the answer is Lutetia (Paris region)x", "the answer is Lyon", judge=judge
        )
        == 1.0
    )
    assert judge.asked == [JudgeQuery("Lutetia (Paris region)x", "Lyon", None)]
    # rule 0, judge no -> 0
    assert rewards.compute_score("docmath", "</think>the answer is 3", "the answer is 7", judge=judge) == 0.0
    assert judge.asked[-1] == JudgeQuery("3", "7", None)
    n = len(judge.asked)
    # unparsed prediction, no </think>, or multiple choice: judge never asked
    rewards.compute_score("musique", "</think>Paris", "the answer is Paris", judge=judge)
    rewards.compute_score("musique", "the answer is Paris", "the answer is Paris", judge=judge)
    rewards.compute_score("docmath", "</think>the answer is ...", "the answer is 7", judge=judge)
    # gold that does not parse even as a bare answer
    rewards.compute_score("docmath", "</think>the answer is 5", "five", judge=judge)
    rewards.compute_score(
        "long_toc_choices", "</think>The correct answer is (A)", "The correct answer is (B)", judge=judge
    )
    assert len(judge.asked) == n


def test_hybrid_scores_batches_only_the_misses():
    judge = FakeJudge()
    items = [
        ScoreItem("musique", "</think>the answer is Paris", "the answer is Paris", "Q0"),
        ScoreItem("musique", "</think>the answer is Lyon", "the answer is Lille", "Q1"),
        ScoreItem("docmath", "</think>the answer is 3", "the answer is 7", "Q2"),
        ScoreItem("long_toc_choices", "</think>The correct answer is (A)", "The correct answer is (B)", "Q3"),
        ScoreItem("musique", "no think", "the answer is Paris", "Q4"),
    ]
    assert hybrid_scores(items) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert hybrid_scores(items, judge) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert judge.asked == [JudgeQuery("Lyon", "Lille", "Q1"), JudgeQuery("3", "7", "Q2")]


def test_hybrid_judge_that_returns_wrong_count_is_an_error():
    class Short(FakeJudge):
        def score_batch(self, queries):
            return []

    item = ScoreItem("musique", "</think>the answer is Lyon", "the answer is Lille")
    with pytest.raises(ValueError, match="returned 0 scores for 1"):
        hybrid_scores([item], Short())
