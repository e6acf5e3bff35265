"""LLM judge over any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, OpenAI, ...).

    judge = OpenAIJudge(JudgeConfig(url="http://127.0.0.1:8000/v1",
                                    model="Qwen2.5-1.5B-Instruct", api_key_env="JUDGE_API_KEY"))
    scores = judge.score_batch([JudgeQuery(prediction, gold, question), ...])

Requests go to `{url}/chat/completions` (url includes `/v1`, as with the OpenAI client),
temperature 0. Standard library only: urllib for HTTP, a thread pool per batch, and one semaphore
per judge that bounds requests in flight across all concurrent batches (`max_concurrency`).

Each query: up to 1 + retries attempts, exponential backoff (backoff_s, 2*backoff_s, ...);
retried on timeouts, refused/reset connections, HTTP 429 and 5xx; not retried on other HTTP
errors, malformed JSON or a reply without [[YES]]/[[NO]]. `timeout_s` is an overall deadline
per attempt (connect, send, headers and body together): a server that drips bytes cannot hold
a request past it, because a timer shuts the socket down at the deadline; each socket
operation is bounded by it as well.

Circuit breaker: a dead or black-holed endpoint would otherwise cost every rule miss
(1 + retries) x timeout_s in every step. After `breaker_failures` consecutive queries fail
in transport (timeout, connection, retryable HTTP status), the judge stops sending for
`breaker_cooldown_s`: queries score 0 at once, counted as failures of kind "unavailable". After
the cool-down requests flow again; one answered request resets the count. 0 disables it.

The API key: only the NAME of the environment variable is stored. The key is read from the
environment when each request is built and sent as `Authorization: Bearer ...`; it is never
logged, never in repr or stats, never in anything checkpointed. Environment proxies
(http_proxy, ...) are ignored and redirects are refused, so the key only goes to url.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from qwenlong_jax.config.load import ConfigError, at_least, positive
from qwenlong_jax.rewards.judge_core import (
    CachingJudge,
    FailureKind,
    JudgeQuery,
    Verdict,
    judge_messages,
    parse_verdict,
)
from qwenlong_jax.rewards.judge_http import NoRedirect, deadline_handlers

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """The LLM judge's endpoint and client limits: the run config's `judge` section, and what
    `OpenAIJudge` takes. `api_key_env` is the NAME of an env var, never the key ("" = no key)."""

    url: str = ""  # empty = no judge (rule reward only)
    model: str = "Qwen2.5-1.5B-Instruct"
    api_key_env: str = "JUDGE_API_KEY"
    timeout_s: float = 30.0  # overall deadline of one request (connect + response), seconds
    max_concurrency: int = 32
    retries: int = 2
    backoff_s: float = 0.5  # first retry's wait; doubles per retry
    max_tokens: int = 1024
    max_cache_entries: int = 1_000_000
    breaker_failures: int = 8  # consecutive failures that open the circuit breaker (0 = never)
    breaker_cooldown_s: float = 30.0

    def __post_init__(self):
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"judge.url must start with http:// or https://, got {self.url!r}")
        if not self.model:
            raise ConfigError("judge.model must be a non-empty model name")
        positive("judge.timeout_s", self.timeout_s)
        at_least("judge.max_concurrency", self.max_concurrency, 1)
        at_least("judge.retries", self.retries, 0)
        at_least("judge.backoff_s", self.backoff_s, 0)
        at_least("judge.max_tokens", self.max_tokens, 1)
        at_least("judge.breaker_failures", self.breaker_failures, 0)
        at_least("judge.breaker_cooldown_s", self.breaker_cooldown_s, 0)


class _Retryable(Exception):
    def __init__(self, kind):
        self.kind = kind


class OpenAIJudge(CachingJudge):
    """Judge client for an OpenAI-compatible `/v1/chat/completions` endpoint. Never raises from
    `score` / `score_batch`; see `stats()` for calls, cache hits and failures by kind."""

    def __init__(self, config: JudgeConfig):
        super().__init__(config.max_cache_entries)
        if not config.url:
            raise ValueError("JudgeConfig.url is empty: no judge endpoint to call")
        if config.api_key_env and config.api_key_env not in os.environ:
            raise ValueError(
                f"JudgeConfig.api_key_env names ${config.api_key_env}, which is not set in the environment"
            )
        self.config = config
        self._url = config.url.rstrip("/") + "/chat/completions"
        self._in_flight = threading.BoundedSemaphore(config.max_concurrency)
        self._breaker_lock = threading.Lock()
        self._consecutive_transport_failures = 0
        self._open_until = 0.0  # time.monotonic() before which no request is sent

    def __repr__(self) -> str:
        c = self.config
        return (
            f"OpenAIJudge(url={c.url!r}, model={c.model!r}, "
            f"api_key_env={c.api_key_env!r}, max_concurrency={c.max_concurrency})"
        )

    __str__ = __repr__

    def _judge_uncached(self, queries: Sequence[JudgeQuery]) -> list[Verdict]:
        workers = min(self.config.max_concurrency, len(queries))
        with concurrent.futures.ThreadPoolExecutor(workers, "judge") as pool:
            return list(pool.map(self._ask, queries))

    def _ask(self, query: JudgeQuery) -> Verdict:
        with self._breaker_lock:
            if time.monotonic() < self._open_until:
                return Verdict(0.0, "unavailable")
        verdict, transport_failed = self._ask_endpoint(query)
        with self._breaker_lock:
            if not transport_failed:
                self._consecutive_transport_failures = 0
            else:
                self._consecutive_transport_failures += 1
                threshold = self.config.breaker_failures
                if threshold and self._consecutive_transport_failures >= threshold:
                    self._open_until = time.monotonic() + self.config.breaker_cooldown_s
                    self._consecutive_transport_failures = 0
        return verdict

    def _ask_endpoint(self, query: JudgeQuery) -> tuple[Verdict, bool]:
        """The verdict, and whether the endpoint failed to answer at all (for the breaker)."""
        body = json.dumps(
            {
                "model": self.config.model,
                "messages": judge_messages(query),
                "temperature": 0.0,
                "max_tokens": self.config.max_tokens,
            }
        ).encode("utf-8")
        kind: FailureKind = "internal"
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                reply = self._post(body)
            except _Retryable as err:
                kind = err.kind
                continue
            except urllib.error.HTTPError:
                return Verdict(0.0, "http"), False
            except (ValueError, KeyError, IndexError, TypeError):  # not the expected JSON
                return Verdict(0.0, "bad_response"), False
            return parse_verdict(reply), False
        return Verdict(0.0, kind), True

    def _post(self, body: bytes) -> str:
        """One HTTP request; returns the reply text, raises _Retryable for transient failures.
        The whole request must finish within timeout_s (a timer cuts the socket at the deadline)."""
        headers = {"Content-Type": "application/json"}
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env, "")
            if key:
                headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self._url, data=body, headers=headers, method="POST")
        state = {"sock": None, "expired": False}
        lock = threading.Lock()

        def on_connect(sock):
            with lock:
                state["sock"] = sock
                if state["expired"]:
                    sock.shutdown(socket.SHUT_RDWR)

        def expire():
            with lock:
                state["expired"] = True
                if state["sock"] is not None:
                    with contextlib.suppress(OSError):
                        state["sock"].shutdown(socket.SHUT_RDWR)

        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), NoRedirect(), *deadline_handlers(on_connect)
        )
        with self._in_flight:
            self._count("calls")
            timer = threading.Timer(self.config.timeout_s, expire)
            timer.daemon = True
            timer.start()
            try:
                with opener.open(request, timeout=self.config.timeout_s) as response:
                    chunks = []
                    while chunk := response.read1(65536):
                        chunks.append(chunk)
                raw = b"".join(chunks)
            except urllib.error.HTTPError as err:
                err.close()
                if err.code in _RETRY_STATUS:
                    raise _Retryable("http") from None
                raise
            except urllib.error.URLError as err:
                timed_out = state["expired"] or isinstance(err.reason, (TimeoutError, socket.timeout))
                raise _Retryable("timeout" if timed_out else "connection") from None
            except TimeoutError:
                raise _Retryable("timeout") from None
            except (ConnectionError, http.client.HTTPException, OSError):
                raise _Retryable("timeout" if state["expired"] else "connection") from None
            finally:
                timer.cancel()
            if state["expired"]:  # cut at the deadline: the body may be incomplete
                raise _Retryable("timeout")
        payload = json.loads(raw.decode("utf-8"))
        return payload["choices"][0]["message"]["content"]
