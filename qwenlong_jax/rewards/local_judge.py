"""LLM judge run by a local model: any `generate_fn(prompts: list[str]) -> list[str]`.

The lead plugs our own sampler in (greedy, i.e. temperature 0, to match the HTTP judge). The
prompt is judge_core's system + user messages turned into one string by `prompt_fn`; the
default joins them with blank lines, pass the model's chat template instead for real use.
Parsing, cache and counters are the same as the HTTP judge's; an exception in `generate_fn` or a
reply count that does not match scores the batch 0 with failure kind "generate".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from qwenlong_jax.rewards.judge_core import CachingJudge, JudgeQuery, Verdict, judge_messages, parse_verdict


def plain_prompt(messages: list[dict[str, str]]) -> str:
    """System and user contents joined by a blank line (no chat template)."""
    return "\n\n".join(message["content"].strip() for message in messages)


class LocalJudge(CachingJudge):
    """Judge backed by a local generate function; `max_batch` caps the prompts per call."""

    def __init__(
        self,
        generate_fn: Callable[[list[str]], list[str]],
        prompt_fn: Callable[[list[dict[str, str]]], str] = plain_prompt,
        max_batch: int = 64,
        max_cache_entries: int = 1_000_000,
    ):
        super().__init__(max_cache_entries)
        if max_batch < 1:
            raise ValueError(f"LocalJudge.max_batch must be >= 1, got {max_batch}")
        self._generate_fn = generate_fn
        self._prompt_fn = prompt_fn
        self._max_batch = max_batch

    def __repr__(self) -> str:
        return f"LocalJudge(generate_fn={getattr(self._generate_fn, '__name__', '?')})"

    def _judge_uncached(self, queries: Sequence[JudgeQuery]) -> list[Verdict]:
        verdicts: list[Verdict] = []
        for start in range(0, len(queries), self._max_batch):
            chunk = queries[start : start + self._max_batch]
            verdicts.extend(self._judge_chunk(chunk))
        return verdicts

    def _judge_chunk(self, queries: Sequence[JudgeQuery]) -> list[Verdict]:
        prompts = [self._prompt_fn(judge_messages(q)) for q in queries]
        self._count("calls")
        try:
            replies = list(self._generate_fn(prompts))
        except Exception:  # a judge must never fail a training step
            return [Verdict(0.0, "generate")] * len(queries)
        if len(replies) != len(queries):
            return [Verdict(0.0, "generate")] * len(queries)
        return [parse_verdict(reply) for reply in replies]


def sampler_generate_fn(
    cfg, params, tokenizer, max_new_tokens: int = 64, prefill_chunk: int = 512
) -> Callable[[list[str]], list[str]]:
    """A `generate_fn` running a local model through our sampler: each prompt string becomes
    one user chat turn (the model's chat template), decoded greedily (temperature 0, as the
    reference judge), the eos text removed.

        judge = LocalJudge(sampler_generate_fn(cfg, params, tok))
    """
    from qwenlong_jax.sampling import generate  # jax is imported only when a local judge is built

    def generate_fn(prompts: list[str]) -> list[str]:
        ids = [tokenizer.chat_prompt(p) for p in prompts]
        out = generate(
            cfg, params, ids, max_new_tokens=max_new_tokens, eos_ids=tokenizer.eos_ids, prefill_chunk=prefill_chunk
        )
        eos = set(tokenizer.eos_ids)
        return [tokenizer.decode([t for t in s[0].tokens if t not in eos]) for s in out]

    generate_fn.__name__ = "sampler_generate_fn"
    return generate_fn
