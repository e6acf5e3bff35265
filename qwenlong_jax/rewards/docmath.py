"""Docmath rule reward: the first number after "the answer is", compared numerically.

docs/rewards.md section 4, step by step:
  extraction   `extract_number`: delete `*`; FIRST case-insensitive "the answer is" + one space
               immediately followed by a token [= ≈ ` % $ ° £ € ¥ (each optional, in this order)]
               [-] [0-9.,]+ ; commas deleted, trailing periods removed.
  conversion   `to_value`: symbols removed, a one- or two-character prefix (only dots can occur)
               dropped, then read with Python literal rules (`-?digits` int with the leading-zero
               and 4300-digit rules, `-?digits.digits` / `-?.digits` float, overflow -> inf,
               anything else -> the int 0).
  comparison   `numbers_match`: power of ten, scale tolerance (x100, x1000, x100000), ceiling to 3
               decimals, relative tolerance 0.15% with signs; OverflowError -> no match.

Departures from the reference, on purpose:
  * Power-of-ten rule: the reference requires `log10(v1) - log10(v2)` to equal its integer
    truncation exactly, so float error misses 125 vs 12.5 and 11 vs 1.1. Here the difference
    must be within 1e-9 of the nearest integer.
  * Ground truth without the phrase: the reference raises AttributeError; here it is read as
    the bare answer, i.e. as if written "the answer is <ground truth>". If even that does not
    parse, the score is 0.
  * Both values infinite: the reference raises ValueError (int(nan)); here it scores 0.
  * The reference's `eval` is replaced by an explicit reading of the only literal shapes its
    token can take, independent of `sys.set_int_max_str_digits`: same values, no eval.
"""

from __future__ import annotations

import math
import re

from qwenlong_jax.rewards.result import RuleResult

ANSWER_PREFIX = "the answer is "  # phrase + exactly one space
_NUMBER_RE = re.compile(r"the answer is (=?≈?`?%?\$?°?£?€?¥?-?[0-9.,]+)", re.IGNORECASE)
# What `extract_number` can return: the token with commas and trailing periods removed.
_TOKEN_RE = re.compile(r"=?≈?`?%?\$?°?£?€?¥?-?[0-9.]*")
# The reference's unit-prefix rule (one or two characters that are neither digits nor signs).
_PREFIX_RE = re.compile(r"[^-+\d]{1,2}((?:[\d,]*\.*\d+))$")
_INT_RE = re.compile(r"-?([0-9]+)")
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.[0-9]*|\.[0-9]+)")
INT_MAX_STR_DIGITS = 4300  # CPython >= 3.11 default limit for int literals
_REL_TOL = 0.0015
_LOG10_TOL = 1e-9


def extract_number(text: str) -> str | None:
    """The first valid number token after "the answer is " (may be ""), or None."""
    match = _NUMBER_RE.search(text.replace("*", ""))
    if match is None:
        return None
    return match.group(1).replace(",", "").rstrip(".")


def extract_gold(ground_truth: str) -> str | None:
    """The gold token: parsed like a response, else the bare answer read after the phrase."""
    gold = extract_number(ground_truth)
    if gold is None:
        gold = extract_number(ANSWER_PREFIX + ground_truth.replace("*", "").strip())
    return gold


def _int_from_digits(digits: str) -> int:
    # int() of more than 640 digits obeys the process-wide sys.set_int_max_str_digits; build
    # long values from short chunks so the result never depends on that global.
    value = 0
    for start in range(0, len(digits), 600):
        chunk = digits[start : start + 600]
        value = value * 10 ** len(chunk) + int(chunk)
    return value


def _literal(text: str) -> int | float:
    """`eval(text)` for the shapes a token can take; anything that is not a literal -> int 0."""
    if m := _INT_RE.fullmatch(text):
        digits = m.group(1)
        if digits.strip("0") == "":  # 0, 00, -0: legal zero
            return 0
        if digits[0] == "0" or len(digits) > INT_MAX_STR_DIGITS:
            return 0  # SyntaxError in Python -> the reference's int 0 fallback
        value = _int_from_digits(digits)
        return -value if text[0] == "-" else value
    if _FLOAT_RE.fullmatch(text):
        return float(text)  # leading zeros fine; too large -> inf, like a float literal
    return 0


def to_value(token: str) -> int | float:
    """Convert an `extract_number` token to the number the reference compares.

    Only the reference's normalisation steps that a token can trigger are kept (its unit words,
    booleans, "10^" and option handling can never match a token).
    """
    if not _TOKEN_RE.fullmatch(token):
        raise ValueError(f"to_value: {token!r} is not a token returned by extract_number")
    text = token.strip().rstrip(".")
    for symbol in "£€¥":
        text = text.replace(symbol, "")
    if "=" in text:
        text = text.split("=")[-1].strip()
    if "≈" in text:
        text = text.split("≈")[-1].strip()
    for symbol in "`%$°":
        text = text.replace(symbol, "")
    if m := _PREFIX_RE.match(text):  # `.5` -> `5`, `...5` -> `.5`
        text = m.group(1)
    return _literal(text or "0")


def _within_eps(pred: int | float, gt: int | float) -> bool:
    eps = abs(gt) * _REL_TOL
    return pred >= gt - eps and pred <= gt + eps


def _ceil3(number: int | float) -> float:
    return math.ceil(number * 1000) / 1000


def numbers_match(p: int | float, g: int | float) -> bool:
    """The reference's four rules, in order (prediction p, ground truth g), with Python's mixed
    int/float arithmetic kept so that huge ints overflow exactly where the reference's do."""
    try:
        v1, v2 = max(abs(g), abs(p)), min(abs(g), abs(p))
        if v1 != 0 and v2 != 0:
            diff = math.log10(v1) - math.log10(v2)
            if abs(diff - round(diff)) <= _LOG10_TOL:  # closed hole: tolerance, not ==
                return True
        if (
            v2 <= v1 / 50
            and _within_eps(v2 * 100, v1)
            or v2 <= v1 / 500
            and _within_eps(v2 * 1000, v1)
            or v2 <= v1 / 50000
            and _within_eps(v2 * 100000, v1)
        ):
            return True
        if _ceil3(v1) == _ceil3(v2):
            return True
        return _within_eps(p, g)
    except OverflowError:  # int(inf)/ceil(inf)/huge int / int
        return False
    except ValueError:  # round(nan) when both are inf; the reference raises here
        return False


def score_segment(segment: str, ground_truth: str) -> RuleResult:
    """Score the answer segment (text after the last `</think>`): int 0 or 1."""
    prediction = extract_number(segment)
    if not prediction:  # no token, or a token of only commas/periods
        return RuleResult(0)
    gold = extract_gold(ground_truth)
    if gold is None:
        return RuleResult(0, prediction, None)
    return RuleResult(int(numbers_match(to_value(prediction), to_value(gold))), prediction, gold)
