"""The training/evaluation record, the data error, and the load report of the bad-record policy.

One `Record` per (prompt, ground truth) example, whichever file format it came from:
verl-style rows (DocQA-RL-1.6K) store only the finished prompt; plain JSONL rows store the
document and question separately. `prompt` is always the user message text (the paper's template
for plain rows); `document`/`question` are filled whenever they are known, which is what lets
evaluation middle-truncate the document alone.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Any, Literal

BadRecordPolicy = Literal["error", "skip"]
Reason = Literal[
    "malformed_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "empty",
    "too_long",
    "non_utf8",
    "bad_ground_truth",
    "duplicate_id",
    "unreadable",
]


class DataError(ValueError):
    """A bad record; the message is one line: `file:line: field 'x': problem`."""

    def __init__(self, loc: str, field: str, reason: Reason, problem: str):
        self.loc, self.field, self.reason = loc, field, reason
        super().__init__(f"{loc}: field '{field}': {problem}")


@dataclasses.dataclass(frozen=True)
class Record:
    id: str
    data_source: str  # picks the scorer (docs/rewards.md section 0)
    prompt: str  # user message text, before the chat template
    ground_truth: str  # passed as is to rewards.compute_score
    answer: str  # the plain answer (ground truth without the answer phrase where it had one)
    document: str | None = None
    question: str | None = None
    response: str | None = None  # SFT target ("<think> ... </think> Therefore, ...")
    num_prompt_tokens: int | None = None  # chat-prompt length, when loaded with a tokenizer
    source: str = ""  # "file:line"
    extra_info: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Record:
        return cls(**json.loads(text))


@dataclasses.dataclass
class LoadReport:
    """What `load_records` read: counts of kept rows and of skipped rows per reason."""

    read: int = 0
    kept: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    first_error: dict[str, str] = dataclasses.field(default_factory=dict)  # reason -> message

    def add_skip(self, err: DataError) -> None:
        self.skipped[err.reason] += 1
        self.first_error.setdefault(err.reason, str(err))

    def summary(self) -> str:
        if not self.skipped:
            return f"read {self.read} rows, kept {self.kept}"
        parts = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
        return f"read {self.read} rows, kept {self.kept}, skipped {sum(self.skipped.values())} ({parts})"
