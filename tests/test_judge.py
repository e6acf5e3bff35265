"""LLM judge clients against a real HTTP server on loopback, started inside this file.

The server routes on the first path segment of url (`http://127.0.0.1:PORT/<mode>/v1`):
yes, no, garbage, badjson, 500, 401, flaky (500 then YES), slow (sleeps past the timeout),
echo (YES iff Answer 1 == Answer 2, sleeps 50 ms and records the peak number in flight).
"""

import json
import logging
import pickle
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qwenlong_jax import rewards
from qwenlong_jax.rewards import (
    JudgeConfig,
    JudgeQuery,
    LocalJudge,
    OpenAIJudge,
    ScoreItem,
    hybrid_scores,
    judge_messages,
    parse_verdict,
)

SECRET = "sk-test-SECRET-4242"


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.count = Counter()  # requests per mode
        self.in_flight = Counter()  # per mode: slow requests may still be sleeping elsewhere
        self.peak = Counter()
        self.auth: list[str | None] = []
        self.bodies: list[dict] = []


def _make_handler(state: _State):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def _reply(self, code: int, payload: bytes):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _content(self, text: str):
            body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
            self._reply(200, json.dumps(body).encode())

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            mode = self.path.strip("/").split("/")[0]
            assert self.path == f"/{mode}/v1/chat/completions", self.path
            with state.lock:
                state.count[mode] += 1
                n = state.count[mode]
                state.auth.append(self.headers.get("Authorization"))
                state.bodies.append(body)
                state.in_flight[mode] += 1
                state.peak[mode] = max(state.peak[mode], state.in_flight[mode])
            counted = True
            try:
                if mode == "yes":
                    self._content("Both say Paris.\n[[YES]]")
                elif mode == "no":
                    self._content("Different cities. [[NO]]")
                elif mode == "garbage":
                    self._content("I think they might be the same, maybe.")
                elif mode == "badjson":
                    self._reply(200, b"<html>not json</html>")
                elif mode == "500":
                    self._reply(500, b'{"error": "boom"}')
                elif mode == "401":
                    self._reply(401, b'{"error": "unauthorized"}')
                elif mode == "flaky":
                    if n % 2 == 1:
                        self._reply(500, b'{"error": "transient"}')
                    else:
                        self._content("[[YES]]")
                elif mode == "slow":
                    time.sleep(0.6)
                    self._content("[[YES]]")
                elif mode == "drip":  # headers at once, then one byte every 50 ms for ~10 s
                    payload = json.dumps({"choices": [{"message": {"content": "[[YES]]" + " " * 200}}]}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    for b in payload:
                        self.wfile.write(bytes([b]))
                        self.wfile.flush()
                        time.sleep(0.05)
                elif mode == "echo":
                    time.sleep(0.05)
                    user = body["messages"][1]["content"]
                    a1 = user.split("Answer 1: ")[1].split("\n")[0]
                    a2 = user.split("Answer 2: ")[1].split("\n")[0]
                    # Leave the in-flight count BEFORE replying: once the client has the reply it
                    # may send its next request, which must not find this one still counted.
                    with state.lock:
                        state.in_flight[mode] -= 1
                    counted = False
                    self._content("[[YES]]" if a1 == a2 else "[[NO]]")
                else:
                    self._reply(404, b"{}")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)
            finally:
                if counted:
                    with state.lock:
                        state.in_flight[mode] -= 1

    return Handler


@pytest.fixture(scope="module")
def server():
    state = _State()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], state
    httpd.shutdown()
    httpd.server_close()


def make_judge(port, mode, **kw):
    kw = {"timeout_s": 0.2, "retries": 0, "backoff_s": 0.01, "api_key_env": "", "max_concurrency": 16, **kw}
    return OpenAIJudge(JudgeConfig(url=f"http://127.0.0.1:{port}/{mode}/v1", model="judge-model", **kw))


def q(i=0, question="Where?"):
    return JudgeQuery(f"Paris{i}", "Paris", question)


# --- parsing and prompt ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, score, failure",
    [
        ("Same city. [[YES]]", 1.0, None),
        ("[[NO]]", 0.0, None),
        ("first [[YES]] then on reflection [[NO]]", 0.0, None),  # the last verdict decides
        ("[[NO]] ... [[YES]]", 1.0, None),
        ("YES", 0.0, "garbage"),
        ("[[yes]]", 0.0, "garbage"),
        ("[YES]", 0.0, "garbage"),
        ("", 0.0, "garbage"),
        (None, 0.0, "garbage"),
    ],
)
def test_parse_verdict(reply, score, failure):
    verdict = parse_verdict(reply)
    assert (verdict.score, verdict.failure) == (score, failure)


def test_judge_messages():
    system, user = judge_messages(JudgeQuery("12.5%", "0.125", "What share?"))
    assert system["role"] == "system" and "[[YES]]" in system["content"]
    assert "[[NO]]" in system["content"]
    assert user == {"role": "user", "content": "\nProblem: What share?\nAnswer 1: 12.5%\nAnswer 2: 0.125\n"}
    _, user = judge_messages(JudgeQuery("a", "b"))
    assert "Problem" not in user["content"] and "Answer 1: a\nAnswer 2: b" in user["content"]


# --- HTTP judge --------------------------------------------------------------------------------


def test_yes_no_and_request_format(server):
    port, state = server
    assert make_judge(port, "yes").score("Paris", "paris", "Capital?") == 1.0
    assert make_judge(port, "no").score("Paris", "Rome", "Capital?") == 0.0
    body = state.bodies[-1]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    assert body["messages"][1]["content"].endswith("Problem: Capital?\nAnswer 1: Paris\nAnswer 2: Rome\n")


def test_failures_score_zero_and_are_counted_by_kind(server):
    port, state = server
    cases = {
        "garbage": "failures_garbage",
        "badjson": "failures_bad_response",
        "500": "failures_http",
        "401": "failures_http",
    }
    for mode, counter in cases.items():
        judge = make_judge(port, mode, retries=2)
        before = state.count[mode]
        assert judge.score_batch([q(1), q(2)]) == [0.0, 0.0]
        stats = judge.stats()
        assert stats["failures"] == 2 and stats[counter] == 2, (mode, stats)
        # 500 is retried (3 attempts each); 401, garbage and bad JSON are not
        attempts = 3 if mode == "500" else 1
        assert state.count[mode] - before == 2 * attempts == stats["calls"], mode


def test_retry_recovers_from_transient_500(server):
    port, state = server
    judge = make_judge(port, "flaky", retries=1)
    before = state.count["flaky"]
    assert judge.score("Paris0", "Paris", "Where?") == 1.0
    assert state.count["flaky"] - before == 2
    assert judge.stats()["failures"] == 0 and judge.stats()["calls"] == 2


def test_timeout(server):
    port, _ = server
    judge = make_judge(port, "slow", timeout_s=0.2, retries=1)
    start = time.monotonic()
    assert judge.score_batch([q(0), q(1), q(2)]) == [0.0, 0.0, 0.0]
    elapsed = time.monotonic() - start
    stats = judge.stats()
    assert stats["failures_timeout"] == 3 and stats["calls"] == 6
    assert elapsed < 1.5, elapsed  # concurrent: ~2 x 0.2 s + backoff, never the server's 0.6 s x 6


def test_overall_deadline_per_request_against_a_dripping_server(server):
    """Each byte arrives well within the socket timeout, so only an overall deadline ends it."""
    port, _ = server
    judge = make_judge(port, "drip", timeout_s=0.5, retries=0)
    start = time.monotonic()
    assert judge.score_batch([q(0)]) == [0.0]
    elapsed = time.monotonic() - start
    assert judge.stats()["failures_timeout"] == 1
    assert elapsed < 1.5, elapsed  # the server would take ~10 s


def test_concurrency_bound(server):
    port, state = server
    judge = make_judge(port, "echo", max_concurrency=3, timeout_s=2.0)
    with state.lock:
        state.peak["echo"] = 0
    queries = [JudgeQuery("Paris" if i % 2 else "Rome", "Paris", f"Q{i}") for i in range(12)]
    assert judge.score_batch(queries) == [float(i % 2) for i in range(12)]
    assert state.peak["echo"] == 3  # reached, never exceeded


def test_concurrency_bound_is_shared_across_concurrent_batches(server):
    port, state = server
    judge = make_judge(port, "echo", max_concurrency=2, timeout_s=2.0)
    with state.lock:
        state.peak["echo"] = 0
    results = {}

    def run(tag):
        results[tag] = judge.score_batch([JudgeQuery("x", "x", f"{tag}{i}") for i in range(6)])

    threads = [threading.Thread(target=run, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"a": [1.0] * 6, "b": [1.0] * 6}
    assert state.peak["echo"] == 2 and judge.stats()["calls"] == 12


def test_cache_hits(server):
    port, state = server
    judge = make_judge(port, "echo", timeout_s=2.0)
    before = state.count["echo"]
    same = JudgeQuery("Paris", "Paris", "Capital?")
    assert judge.score_batch([same, same, JudgeQuery("Rome", "Paris", "Capital?")]) == [1, 1, 0]
    assert state.count["echo"] - before == 2  # duplicate asked once
    assert judge.score_batch([same]) == [1.0]  # cached across batches
    assert judge.score("Paris", "Paris", "Another question?") == 1.0  # question is in the key
    assert judge.score("Paris", "Paris") == 1.0  # None question: own key
    assert state.count["echo"] - before == 4
    stats = judge.stats()
    assert (stats["queries"], stats["cache_hits"], stats["calls"]) == (6, 2, 4)
    assert stats["cache_size"] == 4


def test_failures_are_not_cached(server):
    port, state = server
    judge = make_judge(port, "500")
    before = state.count["500"]
    judge.score("a", "b")
    judge.score("a", "b")
    assert state.count["500"] - before == 2 and judge.stats()["cache_hits"] == 0


def test_dead_endpoint_never_raises():
    with socket.socket() as sock:  # a port that was free a moment ago and now refuses
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    judge = OpenAIJudge(
        JudgeConfig(
            url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=0.2, retries=1, backoff_s=0.01, api_key_env=""
        )
    )
    assert judge.score_batch([q(i) for i in range(4)]) == [0.0] * 4
    stats = judge.stats()
    assert stats["failures_connection"] == 4 and stats["calls"] == 8
    # and the training-side entry points keep the rule score
    assert rewards.compute_score("musique", "</think>the answer is Paris", "the answer is Paris", judge=judge) == 1.0
    assert rewards.compute_score("musique", "</think>the answer is Rome", "the answer is Paris", judge=judge) == 0.0


def _dead_judge(**kw):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kw = {"timeout_s": 0.2, "retries": 0, "max_concurrency": 1, "api_key_env": "", **kw}
    return OpenAIJudge(JudgeConfig(url=f"http://127.0.0.1:{port}/v1", model="m", **kw))


def test_circuit_breaker_stops_calling_a_dead_endpoint():
    judge = _dead_judge(breaker_failures=2, breaker_cooldown_s=0.3)
    assert judge.score_batch([q(i) for i in range(6)]) == [0.0] * 6
    stats = judge.stats()
    counts = (stats["calls"], stats["failures_connection"], stats["failures_unavailable"])
    assert counts == (2, 2, 4)
    time.sleep(0.35)  # cool-down over: the endpoint is tried again
    judge.score_batch([q(10)])
    assert judge.stats()["calls"] == 3


def test_circuit_breaker_can_be_disabled():
    judge = _dead_judge(breaker_failures=0)
    judge.score_batch([q(i) for i in range(12)])
    assert judge.stats()["calls"] == 12 and judge.stats()["failures_connection"] == 12


def test_circuit_breaker_resets_on_an_answer(server):
    port, _ = server
    # flaky answers 500 then [[YES]] alternately: with no retries, failures never reach 2 in a row
    judge = make_judge(port, "flaky", breaker_failures=2, max_concurrency=1)
    judge.score_batch([q(i) for i in range(6)])
    stats = judge.stats()
    assert stats["calls"] == 6 and stats["failures_unavailable"] == 0


def test_api_key_sent_but_never_exposed(server, monkeypatch, caplog):
    port, state = server
    monkeypatch.setenv("QWENLONG_TEST_JUDGE_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    judge = make_judge(port, "yes", api_key_env="QWENLONG_TEST_JUDGE_KEY")
    assert judge.score("a", "a") == 1.0
    assert state.auth[-1] == f"Bearer {SECRET}"
    failing = make_judge(port, "500", api_key_env="QWENLONG_TEST_JUDGE_KEY")
    failing.score("a", "b")  # logs a warning
    assert state.auth[-1] == f"Bearer {SECRET}"
    for j in (judge, failing):
        assert SECRET not in repr(j) and SECRET not in str(j)
        assert SECRET not in repr(j.config) and SECRET not in str(j.stats())
        assert SECRET not in repr(vars(j))
        assert SECRET.encode() not in pickle.dumps(j.config)
    assert "QWENLONG_TEST_JUDGE_KEY" in repr(judge)  # the variable's name is fine to show
    assert "failed" in caplog.text and SECRET not in caplog.text


def test_no_key_env_sends_no_authorization(server):
    port, state = server
    make_judge(port, "no").score("x", "y")
    assert state.auth[-1] is None


def test_config_validation(monkeypatch):
    monkeypatch.delenv("QWENLONG_UNSET_KEY", raising=False)
    with pytest.raises(ValueError, match="QWENLONG_UNSET_KEY"):
        OpenAIJudge(JudgeConfig("http://127.0.0.1:1/v1", "m", api_key_env="QWENLONG_UNSET_KEY"))
    with pytest.raises(ValueError, match="max_concurrency"):
        JudgeConfig("http://127.0.0.1:1/v1", "m", max_concurrency=0)
    with pytest.raises(ValueError, match="judge.url"):
        JudgeConfig("127.0.0.1:1/v1", "m")


def test_hybrid_scores_with_http_judge(server):
    port, state = server
    judge = make_judge(port, "echo", timeout_s=2.0)
    items = [
        ScoreItem("musique", "</think>the answer is Paris", "the answer is Paris", "Q"),  # rule 1
        ScoreItem("musique", "</think>the answer is Lyon", "the answer is Lyon.", "Q"),  # rule 1
        ScoreItem("docmath", "</think>the answer is 3", "the answer is 7", "Q"),  # NO
    ]
    before = state.count["echo"]
    assert hybrid_scores(items, judge) == [1.0, 1.0, 0.0]
    assert state.count["echo"] - before == 1  # only the rule miss went to the judge
    assert state.bodies[-1]["messages"][1]["content"].endswith("Problem: Q\nAnswer 1: 3\nAnswer 2: 7\n")


# --- local judge ---------------------------------------------------------------------------------


def test_local_judge():
    prompts_seen = []

    def generate(prompts):
        prompts_seen.extend(prompts)
        return ["[[YES]]" if "Answer 1: x\n" in p else "nonsense" for p in prompts]

    judge = LocalJudge(generate, max_batch=2)
    queries = [JudgeQuery("x", "y", "Q1"), JudgeQuery("z", "y", "Q2"), JudgeQuery("x", "y", "Q3")]
    assert judge.score_batch(queries) == [1.0, 0.0, 1.0]
    assert len(prompts_seen) == 3 and prompts_seen[0].startswith("You are an expert")
    assert "Problem: Q1" in prompts_seen[0]
    stats = judge.stats()
    assert (stats["calls"], stats["failures_garbage"]) == (2, 1)  # 3 prompts in chunks of 2
    assert judge.score_batch(queries[:1]) == [1.0] and len(prompts_seen) == 3  # cached


def test_local_judge_failures_never_raise():
    def boom(prompts):
        raise RuntimeError("sampler crashed")

    judge = LocalJudge(boom)
    assert judge.score_batch([JudgeQuery("a", "a"), JudgeQuery("b", "b")]) == [0.0, 0.0]
    assert judge.stats()["failures_generate"] == 2
    short = LocalJudge(lambda prompts: ["[[YES]]"])
    assert short.score_batch([JudgeQuery("a", "a"), JudgeQuery("b", "b")]) == [0.0, 0.0]
    assert short.stats()["failures_generate"] == 2
    custom = LocalJudge(
        lambda prompts: ["[[YES]]" for _ in prompts], prompt_fn=lambda messages: "<chat>" + messages[1]["content"]
    )
    assert custom.score("a", "b") == 1.0
