"""Synthetic long-document QA: seeded, length-controlled in tokens, learnable by tiny models.

A document is a list of rigid fact lines over a small closed vocabulary:

    the code of KIRA is 472 .          (numeric attribute: 8 attributes x 3-digit values)
    the boss of KIRA is MOLO .         (entity relation, for multi-hop chains)
    the old river runs near the mill . (filler, only once the distinct facts run out)

Every other fact is a distractor that looks like the answer: same pattern, same value shape,
other entity or other attribute. Questions reuse the exact key phrase of the fact they need
("What is the code of KIRA ?"), which is what lets a small model solve lookup by induction
(copy what followed the matching key): measured here, a ~1M-parameter model learned nothing at
128+ tokens with free-form facts, so the task is made as copy-friendly as possible while keeping
the paper's prompt and answer format.

Families and their `data_source` (dispatch of docs/rewards.md section 0):
  synthetic_lookup              one fact                       -> doc-QA sub_em (fallback branch)
  synthetic_multihop            boss-of chain, then attribute  -> doc-QA sub_em (fallback branch)
  synthetic_docmath             sum / difference of two facts  -> docmath numeric scorer
  synthetic_long_toc_choices    lookup with 4 options          -> multiple choice
Values are fixed-width 3-digit numbers 100-999, distinct within a document, so under sub_em no
distractor value is a substring of the answer or the other way round (a free width would let
"5" match "15"), and no value has a leading zero (the docmath parser rejects "007").

Deviation: the paper's data are real documents; these are closed-vocabulary toy documents.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from qwenlong_jax.data.synthetic_vocab import (
    ATTRIBUTES,
    FAMILIES,
    NAMES,
    RELATIONS,
    CountTokens,
    Document,
    Family,
    Question,
    fact_line,
    filler_line,
)


def make_document(
    rng: random.Random, num_tokens: int, count_tokens: CountTokens, required: int = 2, attributes: int = len(ATTRIBUTES)
) -> Document:
    """A document of at most `num_tokens` tokens (measured with `count_tokens`), as full as fits.

    Facts are drawn without repetition of (key, entity); numeric values are distinct. At least
    `required` numeric facts and 2 relation facts whose targets have numeric facts are kept so
    every family can ask a question, even in a short document (the result may then exceed
    `num_tokens`: about 40 tokens is the floor). `attributes` < 8 uses only the first ones:
    with 1, the key of a fact is the name alone (easiest lookup for the tiniest models).
    """
    if not 1 <= attributes <= len(ATTRIBUTES):
        raise ValueError(f"attributes must be in [1, {len(ATTRIBUTES)}], got {attributes}")
    attrs = ATTRIBUTES[:attributes]
    pairs = [(a, e) for a in attrs for e in NAMES]
    rels = [(r, e) for r in RELATIONS for e in NAMES]
    rng.shuffle(pairs)
    rng.shuffle(rels)
    value_pool = rng.sample(range(100, 1000), len(pairs))
    values: dict[tuple[str, str], str] = {}
    relations: dict[tuple[str, str], str] = {}
    lines: list[str] = []
    # Guaranteed chain material first: 2 relation facts whose targets carry values.
    seed_lines: list[str] = []
    for _ in range(2):
        r, e = rels.pop()
        tgt = rng.choice([n for n in NAMES if n != e])
        relations[(r, e)] = tgt
        seed_lines.append(fact_line(r, e, tgt))
        a = rng.choice(attrs)
        if (a, tgt) not in values:
            pairs.remove((a, tgt))
            values[(a, tgt)] = str(value_pool.pop())
            seed_lines.append(fact_line(a, tgt, values[(a, tgt)]))
    while len(values) < required:
        a, e = pairs.pop()
        values[(a, e)] = str(value_pool.pop())
        seed_lines.append(fact_line(a, e, values[(a, e)]))
    lines.extend(seed_lines)
    used = sum(count_tokens(s) + 1 for s in lines)
    while True:
        roll = rng.random()
        if pairs and (roll < 0.8 or not rels):
            a, e = pairs[-1]
            line = fact_line(a, e, str(value_pool[-1]))
        elif rels:
            r, e = rels[-1]
            tgt = rng.choice([n for n in NAMES if n != e])
            line = fact_line(r, e, tgt)
        else:
            line = filler_line(rng)
        cost = count_tokens(line) + 1
        if used + cost > num_tokens:
            break
        used += cost
        lines.append(line)
        if pairs and (roll < 0.8 or not rels):
            pairs.pop()
            values[(a, e)] = str(value_pool.pop())
        elif rels:
            rels.pop()
            relations[(r, e)] = tgt
    rng.shuffle(lines)
    # Per-line counts ignore merges across the joins: trim distractors until the measure fits.
    needed = set(seed_lines)
    while count_tokens("\n".join(lines)) > num_tokens and len(lines) > len(needed):
        drop = next(i for i in range(len(lines) - 1, -1, -1) if lines[i] not in needed)
        lines.pop(drop)
    present = set(lines)
    values = {k: v for k, v in values.items() if fact_line(*k, v) in present}
    relations = {k: v for k, v in relations.items() if fact_line(*k, v) in present}
    return Document(tuple(lines), values, relations)


def ask(rng: random.Random, doc: Document, family: Family) -> Question:
    """One question of `family` about `doc` (facts it needs are in the document)."""
    items = sorted(doc.values.items())
    if family == "lookup":
        (a, e), v = rng.choice(items)
        return Question(family, f"What is the {a} of {e} ?", v, (fact_line(a, e, v),))
    if family == "multihop":
        chains = [
            ((r, e), t, a) for (r, e), t in sorted(doc.relations.items()) for a in ATTRIBUTES if (a, t) in doc.values
        ]
        if not chains:
            raise ValueError("document has no relation chain; make it with make_document")
        (r, e), t, a = rng.choice(chains)
        v = doc.values[(a, t)]
        return Question(family, f"What is the {a} of the {r} of {e} ?", v, (fact_line(r, e, t), fact_line(a, t, v)))
    if family == "docmath":
        ((a1, e1), v1), ((a2, e2), v2) = rng.sample(items, 2)
        if rng.random() < 0.5:
            op, ans = "plus", int(v1) + int(v2)
            step = f"{v1} + {v2} = {ans} ."
        else:
            if int(v1) < int(v2):
                (a1, e1, v1), (a2, e2, v2) = (a2, e2, v2), (a1, e1, v1)
            op, ans = "minus", int(v1) - int(v2)
            step = f"{v1} - {v2} = {ans} ."
        q = f"What is the {a1} of {e1} {op} the {a2} of {e2} ?"
        return Question(family, q, str(ans), (fact_line(a1, e1, v1), fact_line(a2, e2, v2)), step)
    if family == "choice":
        (a, e), v = rng.choice(items)
        # Distractor options: the same attribute of other entities where the document has them,
        # so every option is a value that appears next to "the {a} of" somewhere.
        same = [w for (a2, e2), w in items if a2 == a and e2 != e]
        other = [w for (a2, e2), w in items if a2 != a and w != v]
        pool = rng.sample(same, min(3, len(same)))
        pool += rng.sample(other, 3 - len(pool)) if len(other) >= 3 - len(pool) else []
        while len(pool) < 3:  # tiny documents: invent values not in the document
            w = str(rng.randrange(100, 1000))
            if w != v and w not in pool:
                pool.append(w)
        options = pool + [v]
        rng.shuffle(options)
        letter = "ABCD"[options.index(v)]
        opts = "\n".join(f"({L}) {w}" for L, w in zip("ABCD", options))
        return Question(family, f"Which is the {a} of {e} ?\n{opts}", letter, (fact_line(a, e, v),))
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def make_example(
    seed: int, index: int, family: Family, doc_tokens: int, count_tokens: CountTokens, attributes: int = len(ATTRIBUTES)
) -> dict:
    """One plain-JSONL row (format (b)) plus the SFT `response`; deterministic in (seed, index)."""
    rng = random.Random(f"{seed}:{index}")
    doc = make_document(rng, doc_tokens, count_tokens, attributes=attributes)
    q = ask(rng, doc, family)
    return {
        "id": f"syn-{seed}-{index}",
        "data_source": q.data_source,
        "document": doc.text,
        "question": q.question,
        "answer": q.answer,
        "response": q.response,
    }


def make_dataset(
    seed: int,
    num: int,
    doc_tokens: int | Sequence[int],
    count_tokens: CountTokens,
    families: Sequence[Family] = FAMILIES,
    attributes: int = len(ATTRIBUTES),
) -> list[dict]:
    """`num` rows cycling through `families` (and through `doc_tokens` when it is a list)."""
    lengths = [doc_tokens] if isinstance(doc_tokens, int) else list(doc_tokens)
    return [
        make_example(
            seed, i, families[i % len(families)], lengths[(i // len(families)) % len(lengths)], count_tokens, attributes
        )
        for i in range(num)
    ]
