"""The local judge runs a model through our own sampler (greedy), end to end."""

import jax

from qwenlong_jax import models, rewards
from qwenlong_jax.data.tokenizer import load_tokenizer
from qwenlong_jax.rewards.judge_core import JudgeQuery
from qwenlong_jax.rewards.local_judge import LocalJudge, sampler_generate_fn


def test_local_judge_through_the_sampler_is_deterministic_and_counted():
    tok = load_tokenizer()
    cfg = models.get_model_config("tiny", vocab_size=tok.vocab_size, num_layers=2)
    params = models.init_params(cfg, jax.random.key(0))
    fn = sampler_generate_fn(cfg, params, tok, max_new_tokens=8)
    replies = fn(["Is 5 the same as five?", "Paris vs paris?"])
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    assert fn(["Is 5 the same as five?"])[0] == replies[0]  # greedy: deterministic
    judge = LocalJudge(fn)
    scores = judge.score_batch([JudgeQuery("5", "five", "q?"), JudgeQuery("5", "five", "q?")])
    # A random model answers neither [[YES]] nor [[NO]]: scored 0 and counted as a failure, once (cache).
    assert scores == [0.0, 0.0]
    stats = judge.stats()
    assert stats["calls"] == 1 and stats["failures"] >= 1
    assert rewards.compute_score("synthetic_lookup", "</think> Therefore, the answer is 471", "472", judge=judge) == 0.0
