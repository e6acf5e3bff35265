"""One input row parsed into a `Record`: verl-style (DocQA-RL-1.6K) or plain JSONL, detected per row.

  (a) verl: data_source, prompt [{role, content}], reward_model.ground_truth, extra_info
      {index, ...}. The user turn's content is the prompt.
  (b) plain: {id, document, question, answer, data_source?, response?}. The prompt is the
      paper's template; the ground truth is the bare answer (the scorer takes bare answers for
      doc-QA and docmath), for multiple choice "The correct answer is (X)".
Every problem raises a one-line `DataError` naming file:line and the field. Multiple-choice
ground truths that the scorer cannot parse are rejected here (the reference would score them 0
silently).
"""

from __future__ import annotations

import re
from typing import Any

from qwenlong_jax.data.prompt import build_prompt, split_prompt
from qwenlong_jax.data.schema import DataError, Record

# The scorer's own dispatch and letter parser: a ground truth is accepted here exactly when the
# scorer can read it.
from qwenlong_jax.rewards.choice import extract_letter
from qwenlong_jax.rewards.dispatch import family_of

DEFAULT_DATA_SOURCE = "docqa"  # not a reference name: REWARD_RULES falls back to doc-QA
_MC_PLAIN = re.compile(r"\(?([A-D])\)?\.?")  # plain-JSONL multiple-choice answer: B, (B), B.
_ANSWER_PHRASE = "the answer is"


def _type_name(x: Any) -> str:
    return type(x).__name__


def _get(row: dict, key: str, typ: type | tuple, loc: str, prefix: str = "", required: bool = True) -> Any:
    name = prefix + key
    if key not in row or row[key] is None:
        if required:
            raise DataError(loc, name, "missing_field", "missing")
        return None
    val = row[key]
    if not isinstance(val, typ) or isinstance(val, bool):
        want = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise DataError(loc, name, "wrong_type", f"expected {want}, got {_type_name(val)}")
    return val


def _nonempty(val: str, loc: str, field: str) -> str:
    if not val.strip():
        raise DataError(loc, field, "empty", "empty")
    return val


def _plain_answer(ground_truth: str) -> str:
    """The bare answer of an answer-form ground truth (display and SFT only; scoring uses the
    ground truth itself)."""
    i = ground_truth.lower().rfind(_ANSWER_PHRASE)
    ans = ground_truth[i + len(_ANSWER_PHRASE) :] if i >= 0 else ground_truth
    return ans.strip().rstrip(".").strip()


def parse_row(row: Any, loc: str) -> Record:
    """One decoded row -> Record, or DataError."""
    if not isinstance(row, dict):
        raise DataError(loc, "<row>", "not_an_object", f"expected a JSON object, got {_type_name(row)}")
    if "prompt" in row:
        return _parse_verl(row, loc)
    if "document" in row:
        return _parse_plain(row, loc)
    raise DataError(loc, "document", "missing_field", "missing (a row needs 'document' (plain) or 'prompt' (verl))")


def _parse_verl(row: dict, loc: str) -> Record:
    data_source = _nonempty(_get(row, "data_source", str, loc), loc, "data_source")
    messages = _get(row, "prompt", list, loc)
    roles = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise DataError(loc, f"prompt[{i}]", "wrong_type", f"expected object, got {_type_name(m)}")
        roles.append(_get(m, "role", str, loc, f"prompt[{i}]."))
        _get(m, "content", str, loc, f"prompt[{i}].")
    # The recipe's prompt is one user turn with no system prompt; anything else would be
    # silently changed by chat_prompt, so it is refused.
    if roles != ["user"]:
        raise DataError(
            loc, "prompt", "wrong_type", f"expected exactly one message with role 'user', got roles {roles}"
        )
    user = _nonempty(messages[0]["content"], loc, "prompt[0].content")
    rm = _get(row, "reward_model", dict, loc)
    gt = _nonempty(_get(rm, "ground_truth", str, loc, "reward_model."), loc, "reward_model.ground_truth")
    is_choice = family_of(data_source) == "choice"
    letter = extract_letter(gt) if is_choice else None
    if is_choice and letter is None:
        raise DataError(
            loc,
            "reward_model.ground_truth",
            "bad_ground_truth",
            f"multiple-choice ground truth {gt[:40]!r} lacks 'The correct answer is (X)'",
        )
    extra = _get(row, "extra_info", dict, loc, required=False) or {}
    split = split_prompt(user)
    document, question = split if split else (None, None)
    if split is not None:
        _nonempty(split[0], loc, "prompt.document")
    rid = str(extra["index"]) if "index" in extra else loc
    answer = letter if letter is not None else _plain_answer(gt)
    return Record(
        id=rid,
        data_source=data_source,
        prompt=user,
        ground_truth=gt,
        answer=answer,
        document=document,
        question=question,
        source=loc,
        extra_info=extra,
    )


def _parse_plain(row: dict, loc: str) -> Record:
    rid = _get(row, "id", (str, int), loc)
    document = _nonempty(_get(row, "document", str, loc), loc, "document")
    question = _nonempty(_get(row, "question", str, loc), loc, "question")
    answer = _get(row, "answer", (str, int, float), loc)
    answer = _nonempty(answer if isinstance(answer, str) else repr(answer), loc, "answer").strip()
    data_source = _get(row, "data_source", str, loc, required=False) or DEFAULT_DATA_SOURCE
    response = _get(row, "response", str, loc, required=False)
    ground_truth = answer
    if family_of(data_source) == "choice":
        m = _MC_PLAIN.fullmatch(answer)
        letter = m.group(1) if m else extract_letter(answer)
        if letter is None:
            raise DataError(
                loc,
                "answer",
                "bad_ground_truth",
                f"multiple-choice answer {answer[:40]!r} is not a letter A-D or 'The correct answer is (X)'",
            )
        answer, ground_truth = letter, f"The correct answer is ({letter})"
    return Record(
        id=str(rid),
        data_source=data_source,
        prompt=build_prompt(document, question),
        ground_truth=ground_truth,
        answer=answer,
        document=document,
        question=question,
        response=response,
        source=loc,
    )
