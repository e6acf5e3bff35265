"""Token ids and loss mask of one SFT warm-up example: chat prompt, then response + eos.

    ids, mask = encode_sft(record, tok, max_prompt_tokens=None)

The loss is on the response tokens only (paper: warm-up SFT with the loss on the response);
`mask[i]` is 1 where `ids[i]` is a response token (eos included, so the model learns to stop).
Targets are next tokens, so the trainer shifts: logits at i-1 predict ids[i] where mask[i] = 1.
"""

from __future__ import annotations

from qwenlong_jax.data.schema import Record
from qwenlong_jax.data.truncation import fit_prompt


def encode_sft(
    record: Record,
    tokenizer,
    max_prompt_tokens: int | None = None,
) -> tuple[list[int], list[int]]:
    """(ids, mask) of prompt + response + eos; the prompt is middle-truncated to
    `max_prompt_tokens` when given (SFT data are normally length-filtered instead)."""
    if record.response is None:
        raise ValueError(f"{record.source or record.id}: record has no 'response' for SFT")
    prompt = (
        tokenizer.chat_prompt(record.prompt)
        if max_prompt_tokens is None
        else fit_prompt(record, tokenizer, max_prompt_tokens)
    )
    response = tokenizer.encode(record.response) + [tokenizer.eos_ids[0]]
    return prompt + response, [0] * len(prompt) + [1] * len(response)
