"""What every LLM judge shares: the prompt, reply parsing, a thread-safe cache and counters.

The prompt is RECONSTRUCTED, not copied: it follows the structure of the judge prompt in
QwenLong-L1's released verl reward code (a system message asking whether two answers to a
problem are equivalent without solving the problem, accepting different notations, explanation
first and a final [[YES]] or [[NO]]; a user message with Problem / Answer 1 / Answer 2, Answer 1
being the prediction and Answer 2 the gold). It is sent with temperature 0.

Departures: the reference counts any reply containing "YES" as a match; here the LAST [[YES]] or
[[NO]] in the reply decides, and a reply with neither is garbage: scored 0 and counted as a
failure. When the question is unknown (`compute_score` path) the Problem line is left out.

A judge never raises out of `score` / `score_batch`: failures (timeouts, HTTP errors, refused
connections, garbage) score 0, are counted in `stats()` by kind, and are not cached (the next
step asks again). Successful verdicts are cached by (question, prediction, gold).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import re
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Literal

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = """You are an expert at judging whether two answers are the same.
You are given a problem and two answers to it, Answer 1 and Answer 2. Decide whether the two answers are equivalent.
Do not try to solve the problem yourself; only decide whether the two answers are equivalent.
The answers are equivalent when they state the same value or meaning, even if they are written in different forms or notations.

Your output must follow this format:
1) Explain why the answers are or are not equivalent.
2) Then give your final verdict as [[YES]] or [[NO]]
"""
USER_TEMPLATE = "\nProblem: {question}\nAnswer 1: {prediction}\nAnswer 2: {gold}\n"
USER_TEMPLATE_NO_QUESTION = "\nAnswer 1: {prediction}\nAnswer 2: {gold}\n"

_VERDICT_RE = re.compile(r"\[\[(YES|NO)\]\]")

FailureKind = Literal["timeout", "connection", "http", "bad_response", "garbage", "unavailable", "generate", "internal"]
FAILURE_KINDS: tuple[FailureKind, ...] = (
    "timeout",
    "connection",
    "http",
    "bad_response",
    "garbage",
    "unavailable",
    "generate",
    "internal",
)


@dataclasses.dataclass(frozen=True)
class JudgeQuery:
    """One question for the judge: are `prediction` and `gold` the same answer to `question`?"""

    prediction: str
    gold: str
    question: str | None = None

    @property
    def key(self) -> tuple[str | None, str, str]:
        return (self.question, self.prediction, self.gold)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A judge's answer to one query: score in {0, 1}; failure names what went wrong, if any."""

    score: float
    failure: FailureKind | None = None


def judge_messages(query: JudgeQuery) -> list[dict[str, str]]:
    """The chat messages (system + user) for one query."""
    if query.question is None:
        user = USER_TEMPLATE_NO_QUESTION.format(prediction=query.prediction, gold=query.gold)
    else:
        user = USER_TEMPLATE.format(question=query.question, prediction=query.prediction, gold=query.gold)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_verdict(reply: str) -> Verdict:
    """The last [[YES]] -> 1.0, [[NO]] -> 0.0; neither -> garbage (0.0, counted as a failure)."""
    found = _VERDICT_RE.findall(reply) if isinstance(reply, str) else []
    if not found:
        return Verdict(0.0, "garbage")
    return Verdict(1.0 if found[-1] == "YES" else 0.0)


class CachingJudge(abc.ABC):
    """Cache + counters + the never-raise batch API; subclasses only answer cache misses."""

    def __init__(self, max_cache_entries: int = 1_000_000):
        if max_cache_entries < 0:
            raise ValueError(f"max_cache_entries must be >= 0, got {max_cache_entries}")
        self._max_cache_entries = max_cache_entries
        self._cache: dict[tuple[str | None, str, str], float] = {}
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    @abc.abstractmethod
    def _judge_uncached(self, queries: Sequence[JudgeQuery]) -> list[Verdict]:
        """Verdicts for distinct, uncached queries, in order. May raise; the caller absorbs it."""

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def score(self, prediction: str, gold: str, question: str | None = None) -> float:
        """1.0 if the judge says the answers match, else 0.0 (also on any failure)."""
        return self.score_batch([JudgeQuery(prediction, gold, question)])[0]

    def score_batch(self, queries: Sequence[JudgeQuery]) -> list[float]:
        """Scores in order. Duplicates and cached queries are not re-asked. Never raises."""
        scores: list[float | None] = [None] * len(queries)
        misses: dict[tuple[str | None, str, str], list[int]] = {}
        with self._lock:
            self._counts["queries"] += len(queries)
            for i, query in enumerate(queries):
                cached = self._cache.get(query.key)
                if cached is not None:
                    scores[i] = cached
                    self._counts["cache_hits"] += 1
                elif query.key in misses:  # asked once per batch; the repeats count as hits
                    misses[query.key].append(i)
                    self._counts["cache_hits"] += 1
                else:
                    misses[query.key] = [i]
        if misses:
            unique = [queries[positions[0]] for positions in misses.values()]
            verdicts = self._safe_judge(unique)
            failed = Counter(v.failure for v in verdicts if v.failure is not None)
            with self._lock:
                for query, verdict in zip(unique, verdicts):
                    if verdict.failure is None:
                        self._store(query.key, verdict.score)
                for kind, n in failed.items():
                    self._counts["failures"] += n
                    self._counts[f"failures_{kind}"] += n
            if failed:
                logger.warning(
                    "judge: %d of %d queries failed (%s); they score 0", sum(failed.values()), len(unique), dict(failed)
                )
            for positions, verdict in zip(misses.values(), verdicts):
                for i in positions:
                    scores[i] = verdict.score
        done = [s for s in scores if s is not None]
        assert len(done) == len(scores)  # every position is a cache hit or a judged miss
        return [float(s) for s in done]

    def _safe_judge(self, queries: list[JudgeQuery]) -> list[Verdict]:
        try:
            verdicts = list(self._judge_uncached(queries))
            if len(verdicts) != len(queries):
                raise ValueError(f"judge returned {len(verdicts)} verdicts for {len(queries)}")
            return verdicts
        except Exception as err:  # a judge must never fail a training step
            logger.warning("judge: batch of %d failed: %s", len(queries), type(err).__name__)
            return [Verdict(0.0, "internal")] * len(queries)

    def _store(self, key, score: float) -> None:
        if self._max_cache_entries == 0:
            return
        if len(self._cache) >= self._max_cache_entries:  # evict the oldest entry
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = score

    def stats(self) -> dict[str, int]:
        """Counters: queries, cache_hits, calls (requests/generate calls), failures[_<kind>]."""
        with self._lock:
            out = {name: self._counts[name] for name in ("queries", "cache_hits", "calls", "failures")}
            out.update({f"failures_{k}": self._counts[f"failures_{k}"] for k in FAILURE_KINDS})
            out["cache_size"] = len(self._cache)
        return out
