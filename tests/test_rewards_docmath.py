"""Docmath rule reward (docs/rewards.md section 4), one case per example in the spec.

Where our closed hole (power-of-ten tolerance) changes the reference's value, the test says so.
"""

import math

import pytest

from qwenlong_jax import rewards
from qwenlong_jax.rewards import docmath


def dm(segment: str, ground_truth: str):
    return rewards.rule_score("docmath_x", "<think>work</think>\n" + segment, ground_truth)


def gt(number: str) -> str:
    return f"Therefore, the answer is {number}"


def match(p: str, g: str):
    """Score of `the answer is p` against `the answer is g`."""
    return dm(f"Therefore, the answer is {p}", gt(g))


# --- extraction ------------------------------------------------------------------------------


def test_first_valid_occurrence_wins():
    assert docmath.extract_number("the answer is unclear, but the answer is 12.5") == "12.5"
    assert docmath.extract_number("the answer is 12.5. Actually, the answer is 13") == "12.5"
    assert dm("the answer is 12.5. Actually, the answer is 13", gt("13")) == 0
    assert dm("the answer is 12.5. Actually, the answer is 13", gt("12.5")) == 1


@pytest.mark.parametrize(
    "segment", ["THE ANSWER IS 12.5", "The Answer Is 12.5", "**The answer is** 12.5", "so the answer is 12.5."]
)
def test_phrase_case_insensitive_and_asterisks_deleted(segment):
    assert dm(segment, gt("12.5")) == 1


@pytest.mark.parametrize(
    "token, expected",
    [
        ("=12.5", "=12.5"),
        ("≈12.5", "≈12.5"),
        ("`12.5`", "`12.5"),
        ("%12.5", "%12.5"),
        ("$12.5", "$12.5"),
        ("°12.5", "°12.5"),
        ("£12.5", "£12.5"),
        ("€12.5", "€12.5"),
        ("¥12.5", "¥12.5"),
        ("=$12.5", "=$12.5"),
        ("$-5", "$-5"),
        ("=≈`%$°£€¥-1", "=≈`%$°£€¥-1"),
        ("1,234,567.", "1234567"),
        ("12.5...", "12.5"),
        ("...", ""),
        (",,,", ""),
        ("12.5%", "12.5"),
        ("12.5 million", "12.5"),
        ("5e3", "5"),
        ("1.2 × 10^5", "1.2"),
        ("12.5km", "12.5"),
    ],
)
def test_token_extraction(token, expected):
    assert docmath.extract_number(f"the answer is {token}") == expected


@pytest.mark.parametrize(
    "segment",
    [
        "approximately 5",
        "the answer is approximately 5",
        "the answer is ~5",
        "the answer is: 5",
        "the answer is  5",
        "the answer is\n5",
        "the answer is (5)",
        "the answer is +5",
        "the answer is -$5",
        "the answer is −5",
        "the answer is USD 5",
        "the answer is € 5",
        "the answer is five",
        "the answer is $=5",  # prefixes out of order
        "the answer is ==5",  # each prefix at most once
    ],
)
def test_no_match_scores_zero(segment):
    assert docmath.extract_number(segment) is None
    assert dm(segment, gt("5")) == 0


@pytest.mark.parametrize("segment", ["the answer is ...", "the answer is ,,,", "the answer is ,."])
def test_empty_token_scores_zero(segment):
    assert dm(segment, gt("0")) == 0  # even against a zero gold: nothing was parsed


# --- conversion --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token, value",
    [
        (".5", 5),
        ("..5", 5),
        (".5.5", 5.5),
        ("...5", 0.5),  # the two-character prefix drop
        ("$.5", 5),
        ("-.5", -0.5),  # a sign blocks the prefix drop
        ("007", 0),
        ("07", 0),
        ("-007", 0),  # leading zeros: invalid int -> 0
        ("0", 0),
        ("00", 0),
        ("-0", 0),
        ("0" * 5000, 0),
        ("012.5", 12.5),
        ("07.0", 7.0),
        ("-12.5", -12.5),
        ("1.2.5", 0),
        ("1..5", 0),
        ("-", 0),
        ("", 0),
        ("=", 0),
        ("$", 0),
        ("=12.5", 12.5),
        ("≈3", 3),
        ("`%$°£€¥7", 7),
        ("=≈-2", -2),
        ("$-5", -5),
    ],
)
def test_to_value(token, value):
    got = docmath.to_value(token)
    assert got == value and type(got) is type(value)


def test_to_value_digit_limit_and_float_overflow():
    assert docmath.to_value("1" * 4300) == int("1" * 4300)
    assert docmath.to_value("-" + "1" * 4300) == -int("1" * 4300)
    assert docmath.to_value("1" * 4301) == 0  # over CPython's 4300-digit literal limit
    assert docmath.to_value("9" * 400 + ".5") == math.inf
    assert type(docmath.to_value("9" * 400 + ".5")) is float


def test_to_value_rejects_non_tokens():
    with pytest.raises(ValueError, match="not a token"):
        docmath.to_value("12 million")


def test_dot_five_means_five():
    assert match(".5", "5") == 1
    assert match(".5", "0.55") == 0  # 5 vs 0.55: no rule holds
    assert match("0.5", "0.55") == 0


def test_invalid_int_gold_becomes_zero():
    assert match("0", "007") == 1  # gold 007 -> int 0
    assert match("7", "007") == 0
    assert match("$.", "0") == 1  # token "$" is non-empty; converts to 0


# --- comparison rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p, g",
    [
        ("-5", "5"),
        ("-200", "200"),
        ("5", "-5"),
        ("0.125", "12.5"),
        ("12500", "12.5"),
        ("1.5", "1,500,000"),
        ("0.3", "3"),
        ("12.5", "12.5"),
    ],
)
def test_power_of_ten_rule(p, g):
    assert match(p, g) == 1


@pytest.mark.parametrize("p, g", [("125", "12.5"), ("11", "1.1")])
def test_power_of_ten_tolerance_closes_float_hole(p, g):
    v1, v2 = float(p), float(g)
    diff = math.log10(v1) - math.log10(v2)
    assert int(diff) != diff  # the reference's exact check fails here: it scores 0
    assert match(p, g) == 1  # ours: within 1e-9 of an integer


@pytest.mark.parametrize(
    "p, g, expected",
    [
        ("0.12505", "12.5", 1),
        ("12510", "12.5", 1),
        ("5.001", "5000", 1),
        ("1.2501", "12.5", 0),  # no tolerant x10 version
        ("0.00012501", "1.25", 0),  # no tolerant x10^4 version either
        ("0.0000125", "1.25", 1),  # x10^5: exact (rule 1)
        ("0.0000125001", "1.25", 1),  # x10^5 within tolerance
    ],
)
def test_scale_tolerance(p, g, expected):
    assert match(p, g) == expected


@pytest.mark.parametrize(
    "p, g, expected",
    [
        ("0.0011", "0.0019", 1),
        ("0.0001", "0.0009", 1),
        ("0.04901", "0.05", 1),
        ("0.0505", "0.05", 0),
        ("-0.0011", "0.0019", 1),  # absolute values
    ],
)
def test_round_up_rule(p, g, expected):
    assert match(p, g) == expected


@pytest.mark.parametrize(
    "p, g, expected",
    [
        ("12.51875", "12.5", 1),
        ("12.5188", "12.5", 0),
        ("12.48125", "12.5", 1),
        ("12.4812", "12.5", 0),
        ("100.15", "100", 1),
        ("100.1501", "100", 0),
        ("0", "0", 1),
        ("0.0", "0", 1),
        ("0.001", "0", 0),
        ("-12.49", "12.5", 0),  # with signs: -12.49 is far from 12.5 ...
        ("12.49", "12.5", 1),  # ... while 12.49 is within 0.15%
        ("-12.49", "-12.5", 1),
    ],
)
def test_relative_tolerance_with_signs(p, g, expected):
    assert match(p, g) == expected


def test_numbers_match_rule_by_rule():
    assert docmath.numbers_match(5, -5)
    assert docmath.numbers_match(100.15, 100) and not docmath.numbers_match(100.1501, 100)
    assert not docmath.numbers_match(0.001, 0)


def test_overflow_scores_zero():
    big = "1" * 400
    assert match(big, "5") == 0  # huge int / 50 overflows a float
    assert match("9" * 400 + ".5", "5") == 0  # inf: int(inf) in the log rule
    assert match("5", "9" * 400 + ".5") == 0
    assert match("9" * 400 + ".5", "9" * 400 + ".5") == 0  # inf vs inf (ref raises ValueError)
    assert match(big, big) == 1  # the log rule holds before anything overflows


def test_score_type_is_int():
    for p in ("12.5", "13"):
        score = match(p, "12.5")
        assert type(score) is int
    assert type(rewards.rule_score("docmath", "no think tag", gt("1"))) is int


# --- ground truth forms ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gold, expected",
    [
        ("12.5", 1),
        ("  12.5 ", 1),
        ("$12.5", 1),
        ("12.5%", 1),
        ("**12.5**", 1),
        ("13", 0),
        ("approximately 12.5", 0),  # bare text that still does not parse: 0 (ref: AttributeError)
    ],
)
def test_bare_ground_truth(gold, expected):
    assert dm("Therefore, the answer is 12.5", gold) == expected


def test_unparsed_response_never_reads_gold():
    assert dm("I do not know", "no number here") == 0


@pytest.mark.parametrize(
    "p, g, expected",
    [
        ("12.5%", "0.125", 1),  # percent vs fraction: the suffix is dropped, x100 is a power of ten
        ("0.125", "12.5%", 1),
        ("$1,250", "1250", 1),
        ("€1,250.00", "1250", 1),
        ("£5", "$5", 1),
        ("¥-3", "-3", 1),
        ("=$1,250", "1250", 1),
        ("≈1,249", "1250", 1),  # 1249 within 0.15% of 1250
        ("≈1,248", "1250", 0),  # 1248 is not
        ("$1,250 million", "1250", 1),  # units are never applied
    ],
)
def test_currency_percent_and_separators(p, g, expected):
    assert match(p, g) == expected
