"""Multiple-choice rule reward (docs/rewards.md section 5), one case per example in the spec."""

import pytest

from qwenlong_jax import rewards
from qwenlong_jax.rewards import choice

GOLD_B = "The correct answer is (B)"


def mc(segment: str, ground_truth: str = GOLD_B):
    return rewards.rule_score("long_toc_choices", "<think>hmm</think> " + segment, ground_truth)


@pytest.mark.parametrize(
    "segment, letter",
    [
        ("The correct answer is (B)", "B"),
        ("The correct answer is B", "B"),
        ("The correct answer is **(B)**", "B"),  # asterisks deleted first
        ("**The correct answer is** B.", "B"),
        ("The correct answer is Both", "B"),  # no word boundary after the letter
        ("The correct answer is Definitely", "D"),
        ("The correct answer is Absolutely", "A"),
        ("The correct answer is Because", "B"),
        ("The correct answer is A. Wait, The correct answer is (B)", "B"),  # parenthesised first
        ("The correct answer is (C). The correct answer is (B)", "C"),  # first match
        ("The correct answer is B)", "B"),  # second search
    ],
)
def test_extract_letter(segment, letter):
    assert choice.extract_letter(segment) == letter


def test_unclosed_paren_fails_both_searches():
    # "(B" fails the first search, and the second needs a letter right after "is ".
    assert choice.extract_letter("The correct answer is (B") is None


@pytest.mark.parametrize(
    "segment",
    [
        "The correct answer is (b)",
        "The correct answer is b",
        "The correct answer is (E)",
        "The correct answer is E",
        "the correct answer is (B)",
        "The Correct Answer Is (B)",
        "The correct answer is: (B)",
        "The correct answer is  (B)",
        "The correct answer is\n(B)",
        "The correct answer is option B",
        "The correct answer is [B]",
        "The correct answer is ( B )",
        "The correct answer is (AB)",
        "The correct answer is (B",
        "B",
    ],
)
def test_unparsable_answers_score_zero(segment):
    assert mc(segment) == 0


@pytest.mark.parametrize(
    "segment, expected",
    [
        ("The correct answer is (B)", 1),
        ("The correct answer is B", 1),
        ("The correct answer is Both", 1),
        ("The correct answer is (A)", 0),
        ("The correct answer is A. Wait, The correct answer is (B)", 1),
    ],
)
def test_scores(segment, expected):
    score = mc(segment)
    assert score == expected and type(score) is int


@pytest.mark.parametrize(
    "gold",
    ["B", "(B)", "the correct answer is (B)", "(b)", "(E)", "The correct answer is (b)", "The correct answer is (E)"],
)
def test_unparsable_ground_truth_scores_zero(gold):
    assert mc("The correct answer is (B)", gold) == 0


@pytest.mark.parametrize(
    "gold", ["The correct answer is B", "The correct answer is (B)", "**The correct answer is (B)**"]
)
def test_ground_truth_forms(gold):
    assert mc("The correct answer is B", gold) == 1


def test_no_think_or_empty_segment():
    assert rewards.rule_score("long_toc_choices", "The correct answer is (B)", GOLD_B) == 0
    empty_segment = "The correct answer is (B)</think>\n"
    assert rewards.rule_score("long_toc_choices", empty_segment, GOLD_B) == 0


def test_choice_never_asks_the_judge():
    class Boom:
        def score(self, *args):
            raise AssertionError("judge consulted for multiple choice")

    assert rewards.compute_score("long_toc_choices", "</think>The correct answer is (A)", GOLD_B, judge=Boom()) == 0.0
