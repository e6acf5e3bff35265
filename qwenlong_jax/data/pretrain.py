"""Pretraining text for the tiny base model: synthetic documents with QA pairs interleaved,
mixed lengths growing along a curriculum.

    ids = pretrain_tokens(seed, index, progress, tok, min_tokens=48, max_tokens=1024)

Each example is deterministic in (seed, index, progress), so a resumed run regenerates exactly
the same stream. A fraction of the examples is the full chat-formatted SFT example (paper prompt,
then the `<think>` trace and answer, then eos), so the base model has seen the whole format
before the SFT warm-up. A measurement drives the design: lookup appeared only with short
documents and several questions per document, so short documents stay in the mix all along
and every document carries several questions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from qwenlong_jax.data.prompt import build_prompt
from qwenlong_jax.data.synthetic import ask, make_document
from qwenlong_jax.data.synthetic_vocab import ATTRIBUTES, NAMES, CountTokens, Family

QA_RESERVE = 16  # tokens kept free per interleaved QA line (one line is ~12-15 tokens)


def pretrain_text(
    rng: random.Random,
    doc_tokens: int,
    count_tokens: CountTokens,
    questions: int = 4,
    families: Sequence[Family] = ("lookup", "multihop"),
    attributes: int = len(ATTRIBUTES),
    restate: float = 0.5,
    qa_reserve: int = QA_RESERVE,
) -> str:
    """A document with QA lines interleaved, about `doc_tokens` tokens in all; each question
    comes after the fact(s) it needs, at a random distance.

    A QA line reuses the fact's key phrase and the paper's answer phrase:
    "What is the code of KIRA ? Therefore, the answer is 472 ." With probability `restate` it
    first restates the fact(s) used, as the SFT trace does inside <think>:
    "What is the code of KIRA ? the code of KIRA is 472 . Therefore, the answer is 472 ."
    Restating turns lookup into plain induction (after "... of KIRA is", copy what followed
    "of KIRA is" in the document), the pattern small models learn first.
    """
    if "choice" in families:
        raise ValueError("multiple choice has no one-line QA form; use lookup/multihop/docmath")
    # Short documents get fewer questions so the facts still dominate the text.
    # qa_reserve=0: the document keeps all `doc_tokens` and up to `questions` QA lines come on
    # top (dense questions: what lets lookup start, see pretrain_example).
    if qa_reserve:
        questions = max(1, min(questions, doc_tokens // (2 * qa_reserve)))
    doc = make_document(rng, max(doc_tokens - qa_reserve * questions, 1), count_tokens, attributes=attributes)
    lines = list(doc.lines)
    inserts: list[tuple[int, str]] = []
    asked: set[str] = set()
    for _ in range(4 * questions):  # distinct questions: a repeat could be answered by copying
        if len(asked) == questions:
            break
        q = ask(rng, doc, rng.choice(list(families)))
        if q.question in asked:
            continue
        asked.add(q.question)
        last = max(lines.index(f) for f in q.facts)
        pos = rng.randint(last + 1, len(lines))
        # Draw only when restating is on, so restate=0 keeps the exact old stream (the
        # tokenizer corpus uses it).
        said = (
            " ".join(q.facts + ((q.reasoning,) if q.reasoning else ())) + " "
            if restate > 0 and rng.random() < restate
            else ""
        )
        inserts.append((pos, f"{q.question} {said}Therefore, the answer is {q.answer} ."))
    for pos, qa in sorted(inserts, key=lambda t: t[0], reverse=True):
        lines.insert(pos, qa)
    return "\n".join(lines)


def curriculum_doc_tokens(rng: random.Random, progress: float, min_tokens: int, max_tokens: int) -> int:
    """Mixed-length curriculum: the cap grows geometrically from min to max as `progress` goes
    from 0 to 1; lengths are drawn log-uniformly below the cap, so short documents stay in the
    mix (what lets lookup learned at 64 tokens carry over to longer ones)."""
    if not 0 < min_tokens <= max_tokens:
        raise ValueError(f"need 0 < min_tokens <= max_tokens, got {min_tokens}, {max_tokens}")
    p = min(max(progress, 0.0), 1.0)
    cap = min_tokens * (max_tokens / min_tokens) ** p
    return int(round(math.exp(rng.uniform(math.log(min_tokens), math.log(cap)))))


def pretrain_example(
    seed: int,
    index: int,
    progress: float,
    tokenizer,
    min_tokens: int = 48,
    max_tokens: int = 1024,
    questions: int = 4,
    chat_fraction: float = 0.25,
    attributes: int = len(ATTRIBUTES),
    restate: float = 0.5,
    loss_on: str = "all",
    qa_reserve: int = QA_RESERVE,
    copy_fraction: float = 0.0,
) -> tuple[list[int], list[int]]:
    """(token ids, loss mask) of pretraining example `index`: interleaved-QA text (ends with
    eos), or with probability `chat_fraction` a chat-formatted SFT example (prompt + response +
    eos). Lengths follow `curriculum_doc_tokens`; the result may exceed the drawn length by the
    template and QA overhead, so crop or pack to the model's sequence length.

    loss_on="all": every token is a target (plain language modelling). "answers": only the QA
    lines (and the chat response) are targets, the document is context. The document's values
    are random (ln 900 = 6.8 nats each, the bulk of the loss and of the clipped gradient) and
    the model never has to write a document: measured here, with "all" a 1M-parameter model sat
    on a loss plateau without ever copying a value.

    qa_reserve (pretrain_text): 0 puts `questions` QA lines on top of a full-length document
    (denser targets). copy_fraction: share of `copy_drill` examples.

    What made a 1M-parameter model read (docs/results.md, "The tiny base checkpoint"): names and values
    as single tokenizer pieces, and copy drills alone first (copy_fraction=1.0, from scratch)
    so an induction head forms before documents join (copy_fraction=0.5, qa_reserve=0,
    restate=1.0, attributes=1); drills mixed into documents from the start never formed it."""
    if loss_on not in ("all", "answers"):
        raise ValueError(f"loss_on must be 'all' or 'answers', got {loss_on!r}")
    rng = random.Random(f"pretrain:{seed}:{index}")
    n = curriculum_doc_tokens(rng, progress, min_tokens, max_tokens)
    eos = tokenizer.eos_ids[0]
    if copy_fraction and rng.random() < copy_fraction:
        return copy_drill(rng, tokenizer, rng.randint(8, 48))
    if rng.random() < chat_fraction:
        doc = make_document(rng, n, tokenizer.count, attributes=attributes)
        q = ask(rng, doc, rng.choice(("lookup", "lookup", "multihop", "docmath", "choice")))
        prompt = tokenizer.chat_prompt(build_prompt(doc.text, q.question))
        response = tokenizer.encode(q.response) + [eos]
        return prompt + response, [int(loss_on == "all")] * len(prompt) + [1] * len(response)
    text = pretrain_text(
        rng, n, tokenizer.count, questions, attributes=attributes, restate=restate, qa_reserve=qa_reserve
    )
    # "\n" is a single user-defined piece, so encoding line by line equals encoding the text.
    (nl,) = tokenizer.encode("\n")
    ids, mask = [], []
    for i, line in enumerate(text.split("\n")):
        piece = ([nl] if i else []) + tokenizer.encode(line)
        target = loss_on == "all" or line.startswith("What ")
        ids += piece
        mask += [int(target)] * len(piece)
    return ids + [eos], mask + [1]


def copy_drill(rng: random.Random, tokenizer, length: int) -> tuple[list[int], list[int]]:
    """A random sequence of `length` names and values, a newline, and the same sequence again;
    the loss is on the repeat. The canonical induction-head trainer: every repeated token is
    predictable only by finding its earlier occurrence and copying what followed, the circuit
    lookup needs (pretrain_example's copy_fraction mixes these in)."""
    words = [rng.choice(NAMES) if rng.random() < 0.5 else str(rng.randrange(100, 1000)) for _ in range(length)]
    line = tokenizer.encode(" " + " ".join(words))
    (nl,) = tokenizer.encode("\n")
    return line + [nl] + line + [tokenizer.eos_ids[0]], [0] * (len(line) + 1) + [1] * (len(line) + 1)


def pretrain_tokens(seed: int, index: int, progress: float, tokenizer, **kwargs) -> list[int]:
    """The token ids of `pretrain_example` (same arguments)."""
    return pretrain_example(seed, index, progress, tokenizer, **kwargs)[0]
