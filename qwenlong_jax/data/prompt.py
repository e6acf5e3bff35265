"""The paper's prompt template (QwenLong-L1, single user turn, no system prompt).

`build_prompt(document, question)` returns the user message text exactly as the reference
implementation writes it; the chat template of the tokenizer wraps it (see tokenizer.py).
`split_prompt` inverts it, so verl-style rows (which store only the finished prompt) can be
middle-truncated on their document at evaluation time.
"""

from __future__ import annotations

import re

PROMPT_TEMPLATE = (
    "Please read the following text and answer the question below.\n\n"
    "<text>\n{document}\n</text>\n\n"
    "{question}\n\n"
    'Format your response as follows: "Therefore, the answer is (insert answer here)".'
)

_HEAD = "Please read the following text and answer the question below.\n\n<text>\n"
_TAIL_RE = re.compile(
    r"\n</text>\n\n(?P<question>.*)\n\n"
    r'Format your response as follows: "Therefore, the answer is \(insert answer here\)"\.\Z',
    re.DOTALL,
)


def build_prompt(document: str, question: str) -> str:
    """The user message for one (document, question) pair."""
    return PROMPT_TEMPLATE.format(document=document, question=question)


def split_prompt(prompt: str) -> tuple[str, str] | None:
    """(document, question) of a prompt written by `build_prompt`, or None if it is not one.

    The document is everything between the head and the LAST "\n</text>\n\n" that is followed by
    a question and the format line, so a document that itself contains "</text>" still splits.
    """
    if not prompt.startswith(_HEAD):
        return None
    body = prompt[len(_HEAD) :]
    # Search from the right: the question never contains the closing tag in our data, the
    # document might.
    idx = body.rfind("\n</text>\n\n")
    while idx >= 0:
        m = _TAIL_RE.match(body, idx)
        if m:
            return body[:idx], m.group("question")
        idx = body.rfind("\n</text>\n\n", 0, idx)
    return None
