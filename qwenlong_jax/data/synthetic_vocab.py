"""The synthetic task's closed vocabulary, fact lines, and its document and question types.

Names are 64 four-letter CVCV names (all the same length, so no name is a substring of another);
a fact line is `the {key} of {entity} is {value} .`; a question carries its answer in the forms
the scorer parses and the SFT trace (data/synthetic.py generates both).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Literal

Family = Literal["lookup", "multihop", "docmath", "choice"]
FAMILIES: tuple[Family, ...] = ("lookup", "multihop", "docmath", "choice")
DATA_SOURCES: dict[str, str] = {
    "lookup": "synthetic_lookup",
    "multihop": "synthetic_multihop",
    "docmath": "synthetic_docmath",
    "choice": "synthetic_long_toc_choices",
}
CountTokens = Callable[[str], int]

# 64 four-letter CVCV names; all the same length, so no name is a substring of another.
_CONS, _VOWS = "BDFGKLMNPRSTVZ", "AEIOU"
NAMES: tuple[str, ...] = tuple(
    random.Random(1234).sample([a + b + c + d for a in _CONS for b in _VOWS for c in _CONS for d in _VOWS], 64)
)
ATTRIBUTES: tuple[str, ...] = ("code", "age", "size", "price", "rank", "score", "weight", "level")
RELATIONS: tuple[str, ...] = ("boss", "friend")
_FILLER = (
    ("old", "small", "quiet", "green", "dark", "tall"),
    ("river", "house", "garden", "tower", "field", "road"),
    ("runs near", "stands by", "lies past", "waits at"),
    ("mill", "bridge", "market", "school", "hill", "gate"),
)
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def fact_line(key: str, entity: str, value: str) -> str:
    return f"the {key} of {entity} is {value} ."


@dataclasses.dataclass(frozen=True)
class Document:
    """A generated document: its lines and the facts they state."""

    lines: tuple[str, ...]
    values: dict  # (attribute, entity) -> "472"
    relations: dict  # (relation, entity) -> "MOLO"

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclasses.dataclass(frozen=True)
class Question:
    family: Family
    question: str
    answer: str  # plain form: "472", "863", or the letter "B" for multiple choice
    facts: tuple[str, ...]  # the fact lines the answer needs, in reasoning order
    reasoning: str = ""  # extra step after the facts (docmath arithmetic)

    @property
    def data_source(self) -> str:
        return DATA_SOURCES[self.family]

    @property
    def ground_truth(self) -> str:
        """The answer in the form the scorer parses (docs/rewards.md section 2)."""
        if self.family == "choice":
            return f"The correct answer is ({self.answer})"
        return f"Therefore, the answer is {self.answer}"

    @property
    def response(self) -> str:
        """SFT trace: the facts used inside <think>, then the answer phrase."""
        think = " ".join(self.facts + ((self.reasoning,) if self.reasoning else ()))
        final = (
            f"The correct answer is ({self.answer})."
            if self.family == "choice"
            else f"Therefore, the answer is {self.answer}."
        )
        return f"{THINK_OPEN} {think} {THINK_CLOSE} {final}"


def filler_line(rng: random.Random) -> str:
    a, n, v, m = (rng.choice(ws) for ws in _FILLER)
    return f"the {a} {n} {v} the {m} ."
