"""Doc-QA rule reward (`multihoprag`, `musique`, and our own sources): substring exact match.

docs/rewards.md section 3. The answer is the text after the LAST lowercase, case-sensitive
"the answer is" (after deleting `*`), cleaned of whitespace, two special tokens and
leading/trailing periods; both sides are SQuAD-normalised and the score is 1.0 when either is a
character substring of the other ("sub_em").

Departures from the reference, on purpose:
  * Empty normalised answer. The reference treats a side that normalises to "" as contained in
    everything (`the answer is a.` scores 1 against any gold). Here, when either side
    normalises to "", the lower-cased, stripped extracted answers are compared for equality.
  * Ground truth without the phrase. The reference raises AttributeError; here it is taken as
    the bare answer and cleaned the same way (our JSONL stores bare answers).
"""

from __future__ import annotations

import re
import string

from qwenlong_jax.rewards.result import RuleResult

ANSWER_PHRASE = "the answer is"
# DeepSeek-R1 chat tokens the reference deletes from the candidate (fullwidth bars, U+2581).
_SPECIAL_TOKENS = ("<\uff5cAssistant\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>")
_PUNCTUATION = frozenset(string.punctuation)  # the 32 ASCII characters only
_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")  # str pattern: Unicode word boundaries


def _clean(candidate: str) -> str:
    candidate = candidate.strip()
    for token in _SPECIAL_TOKENS:
        candidate = candidate.replace(token, "")
    return candidate.strip().strip(".").strip()


def extract_answer(text: str) -> str | None:
    """Cleaned text after the last "the answer is"; None when the phrase is missing."""
    text = text.replace("*", "")
    if ANSWER_PHRASE not in text:
        return None
    return _clean(text.rsplit(ANSWER_PHRASE, 1)[-1])


def extract_gold(ground_truth: str) -> str:
    """The gold answer: parsed like a response; without the phrase, the whole text, cleaned."""
    gold = extract_answer(ground_truth)
    return _clean(ground_truth.replace("*", "")) if gold is None else gold


def normalize_answer(text: str) -> str:
    """SQuAD normalisation, reference order: lower, ASCII punctuation, articles, spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def sub_em(prediction: str, gold: str) -> bool:
    """Either normalised side is a substring of the other.

    Closed hole: when either side normalises to "", compare `x.lower().strip()` for equality
    instead of letting "" match everything.
    """
    norm_pred, norm_gold = normalize_answer(prediction), normalize_answer(gold)
    if not norm_pred or not norm_gold:
        return prediction.lower().strip() == gold.lower().strip()
    return norm_gold in norm_pred or norm_pred in norm_gold


def score_segment(segment: str, ground_truth: str) -> RuleResult:
    """Score the answer segment (text after the last `</think>`): 0.0 or 1.0 (floats)."""
    prediction = extract_answer(segment)
    if not prediction:  # phrase missing, or nothing left after it
        return RuleResult(0.0)
    gold = extract_gold(ground_truth)
    # The reference averages sub_em over a batch of one and rounds to 2 decimals: a float.
    return RuleResult(round(float(sub_em(prediction, gold)) / 1, 2), prediction, gold)
