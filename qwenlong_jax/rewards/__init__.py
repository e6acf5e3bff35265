"""Rewards: QwenLong-L1's rule scorer (docs/rewards.md), LLM judges, overlong shaping.

API
    compute_score(data_source, response, ground_truth, judge=None) -> float
        The reward before overlong shaping. Strip the eos text first: strip_eos(text, eos_token).
        Family by data_source (choice / docmath / docqa), answer segment after the last
        `</think>`, rule score; with a judge, max(rule, judge) where the rule gave < 1 (doc-QA
        and docmath only; the judge sees question=None). acc(score) -> bool is `score == 1.0`.
    rule_result(data_source, response, ground_truth) -> RuleResult(score, prediction, gold)
        The rule score in its family's type (int/float) and the answers it compared.
    hybrid_scores(items: list[ScoreItem], judge=None) -> list[float]
        Batched compute_score; one judge batch (with question texts) for the rule misses.
    OpenAIJudge(JudgeConfig(url, model, api_key_env, max_concurrency, timeout_s, ...))
    LocalJudge(generate_fn, prompt_fn=plain_prompt)
        .score(prediction, gold, question=None) -> float, .score_batch(list[JudgeQuery]) ->
        list[float]: never raise; failures score 0 and are counted in .stats() (queries,
        cache_hits, calls, failures, failures_<kind>); verdicts cached by (question, prediction,
        gold). The HTTP judge reads its key from the env var named by api_key_env at request
        time, bounds requests in flight, retries with backoff and has a circuit breaker.
    overlong_penalty(length, max_response_length=10000, buffer_len=1000, factor=1.0) -> float32
    shape_reward(score, length, ...) -> float32;  shape_rewards(scores_B, lengths_B, width, ...)
        -> [B, width] float32 with score + penalty at index length - 1.

Deliberate departures from the reference (documented where they live): doc-QA answers that
normalise to "" are compared raw instead of matching everything (docqa.py); the power-of-ten
rule uses a 1e-9 tolerance (docmath.py); a ground truth without the answer phrase is the bare
answer for doc-QA/docmath (choice: 0); unknown data sources are doc-QA (dispatch.py).
"""

from qwenlong_jax.rewards.dispatch import Family, acc, compute_score, family_of, needs_judge, rule_result, rule_score  # noqa: F401
from qwenlong_jax.rewards.hybrid import ScoreItem, hybrid_scores  # noqa: F401
from qwenlong_jax.rewards.judge import JudgeConfig, OpenAIJudge  # noqa: F401
from qwenlong_jax.rewards.judge_core import (  # noqa: F401
    SYSTEM_PROMPT,
    CachingJudge,
    JudgeQuery,
    Verdict,
    judge_messages,
    parse_verdict,
)
from qwenlong_jax.rewards.local_judge import LocalJudge, plain_prompt  # noqa: F401
from qwenlong_jax.rewards.overlong import overlong_penalty, shape_reward, shape_rewards  # noqa: F401
from qwenlong_jax.rewards.result import RuleResult  # noqa: F401
from qwenlong_jax.rewards.segment import answer_segment, strip_eos  # noqa: F401
