"""The final-answer segment of a response, and the eos-suffix strip done before scoring.

docs/rewards.md section 1: only the text after the LAST literal, case-sensitive `</think>` is
scored, stripped with `str.strip` (Unicode whitespace). No `</think>` or an empty segment scores 0
in every family. `<think>` itself is never checked. Before any of this, the reference's reward
manager removes the tokenizer's eos text when the decoded response ends with it.
"""

from __future__ import annotations

THINK_END = "</think>"


def answer_segment(response: str) -> str | None:
    """Text after the last `</think>`, stripped; None without the tag or when nothing is left."""
    if THINK_END not in response:
        return None
    segment = response.rsplit(THINK_END, 1)[-1].strip()
    return segment or None


def strip_eos(text: str, eos_token: str | None) -> str:
    """Remove one trailing `eos_token` text, as the reference's naive reward manager does.

    Departure: an empty or missing eos text leaves `text` unchanged (the reference's
    `text[:-len("")]` would empty the whole response; no real tokenizer has an empty eos).
    """
    if eos_token and text.endswith(eos_token):
        return text[: -len(eos_token)]
    return text
