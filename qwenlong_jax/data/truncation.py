"""Middle truncation of long inputs for evaluation (training filters over-long inputs instead).

As in the paper's evaluation (LongBench style): keep the first and the last half of the token
budget and drop the middle. `fit_prompt` applies it to the document only, so the instructions,
the question and the format line always survive; records whose prompt does not follow the
template (verl rows written by someone else) fall back to truncating the whole user text.
"""

from __future__ import annotations

from collections.abc import Sequence

from qwenlong_jax.data.prompt import build_prompt
from qwenlong_jax.data.schema import Record


def truncate_middle(ids: Sequence[int], budget: int) -> list[int]:
    """The first budget//2 and the last budget - budget//2 items; unchanged if they fit."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    ids = list(ids)
    if len(ids) <= budget:
        return ids
    head = budget // 2
    return ids[:head] + ids[len(ids) - (budget - head) :]


def fit_prompt(record: Record, tokenizer, max_prompt_tokens: int) -> list[int]:
    """Chat-prompt ids of `record` with at most `max_prompt_tokens` tokens, middle-truncating
    the document. The truncated document is decoded back to text and the prompt rebuilt, since
    the template and chat wrapping are text; tokens can merge at the cut, so the budget is
    re-checked and tightened until it fits (a few rounds at most)."""
    ids = tokenizer.chat_prompt(record.prompt)
    if len(ids) <= max_prompt_tokens:
        return ids
    if record.document is not None and record.question is not None:
        body, rebuild = record.document, lambda text: build_prompt(text, record.question)
    else:
        body, rebuild = record.prompt, lambda text: text
    body_ids = tokenizer.encode(body)
    keep = len(body_ids) - (len(ids) - max_prompt_tokens)
    for _ in range(8):
        if keep <= 0:
            raise ValueError(
                f"{record.source or record.id}: the prompt without its document "
                f"already has more than max_prompt_tokens={max_prompt_tokens} tokens"
            )
        ids = tokenizer.chat_prompt(rebuild(tokenizer.decode(truncate_middle(body_ids, keep))))
        if len(ids) <= max_prompt_tokens:
            return ids
        keep -= len(ids) - max_prompt_tokens
    raise ValueError(f"{record.source or record.id}: could not fit the prompt into {max_prompt_tokens} tokens")
