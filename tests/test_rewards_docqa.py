"""Doc-QA rule reward (docs/rewards.md section 3), one case per example in the spec.

Expected values are the spec's; where our closed hole changes the reference's value, the test
says so (`# ref: 1`).
"""

import pytest

from qwenlong_jax import rewards
from qwenlong_jax.rewards import docqa


def qa(segment: str, ground_truth: str):
    """Rule score of a musique response whose answer segment is `segment`."""
    return rewards.rule_score("musique", "<think>reasoning</think>" + segment, ground_truth)


def gt(answer: str) -> str:
    return f"Therefore, the answer is {answer}"


# --- extraction: the phrase ----------------------------------------------------------------


@pytest.mark.parametrize(
    "segment, expected",
    [
        ("The answer is Paris", 0.0),  # capital T: no match
        ("THE ANSWER IS PARIS", 0.0),
        ("Therefore, the answer is Paris", 1.0),
        ("bathe answer is Paris", 1.0),  # phrase inside a word still matches
        ("Paris", 0.0),  # no phrase
        ("the answer: Paris", 0.0),
    ],
)
def test_phrase_is_lowercase_case_sensitive_substring(segment, expected):
    assert qa(segment, gt("Paris")) == expected


def test_last_occurrence_wins():
    segment = "the answer is London. No wait, the answer is Paris."
    assert qa(segment, gt("Paris")) == 1.0
    assert qa(segment, gt("London")) == 0.0  # "paris" vs "london": no containment


def test_asterisks_deleted_before_search():
    assert qa("Therefore, the answer is **Paris**", gt("Paris")) == 1.0
    assert qa("Therefore, the **answer** is Paris", gt("Paris")) == 1.0  # phrase re-forms
    assert qa("the answer is Paris", "Therefore, the answer is **Paris**") == 1.0


@pytest.mark.parametrize(
    "segment",
    ["the answer is .", "the answer is ...", "the answer is", "the answer is   ", "the answer is <｜Assistant｜>."],
)
def test_empty_candidate_scores_float_zero(segment):
    score = qa(segment, gt("Paris"))
    assert score == 0.0 and isinstance(score, float)


def test_cleaning_order():
    # strip, delete the two special tokens, strip, strip periods, strip
    assert docqa.extract_answer("the answer is  . Paris . ") == "Paris"
    assert docqa.extract_answer("the answer is Paris.<｜end▁of▁sentence｜>") == "Paris"
    assert docqa.extract_answer("the answer is <｜Assistant｜> ..Paris..") == "Paris"
    assert docqa.extract_answer("the answer is Paris!") == "Paris!"  # only periods stripped
    assert docqa.extract_answer("the answer is\u3000Paris\u3000") == "Paris"  # Unicode space
    assert docqa.extract_answer("no phrase") is None
    assert qa("the answer is Paris.<｜end▁of▁sentence｜>", gt("Paris")) == 1.0


# --- normalisation ----------------------------------------------------------------------------


def test_normalize_answer_steps():
    assert docqa.normalize_answer("The  Eiffel-Tower, in PARIS!") == "eiffeltower in paris"
    assert docqa.normalize_answer("a1 an apple the") == "a1 apple"
    assert docqa.normalize_answer("“Paris” — ’") == "“paris” — ’"  # non-ASCII punctuation kept
    assert docqa.normalize_answer("xéa") == "xéa"  # Unicode \b: é and a are both word chars


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("Jean-Luc", "JeanLuc", 1.0),  # ASCII hyphen deleted
        ("Jean—Luc", "Jean-Luc", 0.0),  # em dash kept: "jean—luc" vs "jeanluc"
        ("O'Neil", "ONeil", 1.0),
        ("O’Neil", "ONeil", 0.0),  # curly apostrophe kept
        ("Bank of West", "Bank of the West", 1.0),  # article removed on the gold side
        ("x 1 y", "x a1 y", 0.0),  # `a1` is not an article
        ("xé y", "xéa y", 0.0),  # `a` after é is inside a word
        ("New   York", "New York", 1.0),  # whitespace collapsed
        ("NEW YORK", "new york", 1.0),  # lower-cased
    ],
)
def test_normalisation_cases(pred, gold, expected):
    assert qa(f"Therefore, the answer is {pred}", gt(gold)) == expected


# --- the empty-normalised hole, closed on purpose ----------------------------------------------


@pytest.mark.parametrize("pred", ["a.", "?!", "the", "A", "an"])
def test_prediction_normalising_to_empty_does_not_match_everything(pred):
    # ref: 1 for every gold. Ours: lower-cased stripped raw answers compared for equality.
    assert qa(f"Therefore, the answer is {pred}", gt("Paris")) == 0.0


def test_gold_normalising_to_empty_does_not_match_everything():
    gold = "Therefore, the answer is A"
    assert qa("Therefore, the answer is Paris", gold) == 0.0  # ref: 1
    assert qa("Therefore, the answer is a", gold) == 1.0  # raw "a" == "a"
    assert qa("Therefore, the answer is A.", gold) == 1.0  # periods stripped first: "A"
    assert qa("Therefore, the answer is the", gold) == 0.0  # both empty, raw differ


def test_empty_gold_candidate():
    # Gold phrase with nothing after it: raw "" never equals a non-empty prediction (ref: 1).
    assert qa("Therefore, the answer is Paris", "Therefore, the answer is .") == 0.0


# --- containment consequences ----------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("5", "15"),
        ("150", "5"),
        ("15", "5"),  # both directions of containment
        ("concatenate", "cat"),
        ("unknown", "no"),
        ("not", "no"),
        ("London or Paris or Rome", "Paris"),
        ("Paris. It is the capital of France", "Paris"),
        ("1,000", "1000"),
        ("SÃO PAULO", "São Paulo"),
        ("yes", "yes it is"),  # no yes/no special case
    ],
)
def test_containment_scores_one(pred, gold):
    assert qa(f"Therefore, the answer is {pred}", gt(gold)) == 1.0


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("$5,000,000", "$5 million"),
        ("París", "Paris"),
        ("Sao Paulo", "São Paulo"),
        ("Rome", "Paris"),
    ],
)
def test_non_containment_scores_zero(pred, gold):
    assert qa(f"Therefore, the answer is {pred}", gt(gold)) == 0.0


# --- return types and ground-truth forms --------------------------------------------------------


def test_return_types():
    no_think = rewards.rule_score("musique", "the answer is Paris", gt("Paris"))
    empty = rewards.rule_score("musique", "the answer is Paris</think>  \n ", gt("Paris"))
    missing = qa("Paris", gt("Paris"))
    hit, miss = qa("the answer is Paris", gt("Paris")), qa("the answer is Rome", gt("Paris"))
    assert (no_think, empty) == (0, 0) and type(no_think) is int and type(empty) is int
    assert missing == 0.0 and type(missing) is float
    assert (hit, miss) == (1.0, 0.0) and type(hit) is float and type(miss) is float


def test_bare_ground_truth_is_the_answer():
    # ref: AttributeError. Ours: a gold without the phrase is the bare answer, cleaned the same way.
    assert qa("Therefore, the answer is Paris", "Paris") == 1.0
    assert qa("Therefore, the answer is Paris", " **Paris**. ") == 1.0
    assert qa("Therefore, the answer is Rome", "Paris") == 0.0
    # "The answer is" (capital T) is not the phrase, so the whole text is the bare answer
    assert qa("Therefore, the answer is Paris", "The answer is Paris") == 1.0


def test_gold_uses_last_phrase_too():
    assert qa("the answer is Rome", "the answer is Paris, or the answer is Rome") == 1.0
    assert qa("the answer is Paris", "the answer is Paris, or the answer is Rome") == 0.0
