"""A tiny RL rollout for tests that compare rollout settings: one random 1-layer model, n
synthetic lookup prompts, the same key; only the RLConfig changes between calls."""

import jax

from qwenlong_jax import models
from qwenlong_jax.config import PhaseConfig, RLConfig
from qwenlong_jax.data.schema import Record
from qwenlong_jax.data.tokenizer import load_tokenizer
from qwenlong_jax.run.rollout import rollout
from qwenlong_jax.run.step_shapes import rl_step_shapes


def tiny_rollouts(n_prompts: int, max_output: int, rls: list[RLConfig]) -> list:
    """The rollout (run/rollout.py) of the same n prompts under each RLConfig of `rls`."""
    tok = load_tokenizer()
    cfg = models.get_model_config("tiny", vocab_size=tok.vocab_size, hidden_size=32, num_layers=1)
    params = models.init_params(cfg, jax.random.key(1))
    recs = [
        Record(
            id=f"r{i}",
            data_source="synthetic_lookup",
            prompt=f"What is the code of SEPA {i} ?",
            ground_truth="Therefore, the answer is 472",
            answer="472",
        )
        for i in range(n_prompts)
    ]
    prompts = [tok.chat_prompt(r.prompt) for r in recs]
    phase = PhaseConfig(name="p", kind="rl", max_input=64, max_output=max_output, batch=n_prompts)
    return [
        rollout(
            cfg,
            params,
            tok,
            recs,
            prompts,
            shapes=rl_step_shapes(phase, rl, 64),
            rl=rl,
            key=jax.random.key(3),
            prefill_chunk=64,
        )
        for rl in rls
    ]
