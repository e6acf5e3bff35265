"""Multiple-choice rule reward (`long_toc_choices`): the letter after "The correct answer is".

docs/rewards.md section 5. After deleting `*`, search the whole text first for the
case-sensitive `The correct answer is (X)`, then for `The correct answer is X`, X in A-D (no
word boundary after X: "Both" reads as B). The ground truth is parsed the same way; if either
side does not parse the score is 0 (the reference catches the error silently). Score: int 1 if
the letters are equal, else 0. No LLM judge is consulted for this family (as in the reference).
"""

from __future__ import annotations

import re

from qwenlong_jax.rewards.result import RuleResult

_PAREN_RE = re.compile(r"The correct answer is \(([A-D])\)")
_BARE_RE = re.compile(r"The correct answer is ([A-D])")


def extract_letter(text: str) -> str | None:
    """The chosen letter, parenthesised form first over the whole text; None when absent."""
    text = text.replace("*", "")
    match = _PAREN_RE.search(text) or _BARE_RE.search(text)
    return match.group(1) if match else None


def score_segment(segment: str, ground_truth: str) -> RuleResult:
    """Score the answer segment (text after the last `</think>`): int 0 or 1."""
    prediction, gold = extract_letter(segment), extract_letter(ground_truth)
    if prediction is None or gold is None:
        return RuleResult(0, prediction, gold)
    return RuleResult(int(prediction.lower() == gold.lower()), prediction, gold)
