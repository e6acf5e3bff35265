"""Generate G responses per prompt with the sampler, decode them, and reward them.

One call = one generation round of one RL step: gen_B prompts -> gen_B x G samples, with static
shapes per phase (prompts padded to the phase's bucket, max_output new tokens), so the
sampler compiles once per phase. Rewards: hybrid rule+judge score of the text after the
last `</think>` (eos text removed first, as the reference's reward manager does), plus the
overlong penalty computed on the token length (rewards.shape_reward).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import jax
import numpy as np

from qwenlong_jax import rewards
from qwenlong_jax.config import RLConfig
from qwenlong_jax.data.schema import Record
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.run.step_shapes import PREFILL_CHUNK, RLStepShapes
from qwenlong_jax.sampling import decode, sampler, samplers, strategies


@dataclasses.dataclass
class Rollout:
    prompts: list[list[int]]  # [B]
    responses: list[list[int]]  # [B*G], eos included when the sample stopped on it
    sampler_logps: list[np.ndarray]  # [B*G], float32 per response token: the sampler's log p (logits / T)
    texts: list[str]  # [B*G], eos removed
    score_N: np.ndarray  # rule (or hybrid) score
    reward_N: np.ndarray  # score + overlong penalty (what the advantages use)
    acc_N: np.ndarray  # score == 1 (what dynamic sampling filters on)
    length_N: np.ndarray | jax.Array
    truncated_N: np.ndarray | jax.Array
    token_steps: int = 0  # sample-steps the sampler computed (lockstep: steps x B x G per call)
    generate_s: float = 0.0  # wall seconds in the sampler (to host arrays), compile included
    reward_s: float = 0.0  # wall seconds decoding the texts and scoring them (judge included)


def rollout(
    cfg: ModelConfig,
    params,
    tokenizer,
    records: Sequence[Record],
    prompts: Sequence[list[int]],
    *,
    shapes: RLStepShapes,
    rl: RLConfig,
    key: jax.Array,
    judge=None,
    prefill_chunk: int = PREFILL_CHUNK,
    mesh=None,
) -> Rollout:
    """One generation round: `shapes` (RLStepShapes of the phase, prompts padded to shapes.S with
    `prefill_chunk`) give every size; `rl` the sampling and overlong-reward settings."""
    G, S = shapes.G, shapes.S
    tokens_BS, lens_B = sampler.pad_prompts(prompts, S, pad_id=tokenizer.pad_id)
    keys_BG = sampler.sample_keys(key, np.arange(len(prompts)), G)
    strategy = strategies.from_flags(rl.temperature, rl.top_p, rl.top_k, 0.0)
    # rl.sampler's schedule, shapes.sample_B prompts at once (rl.rollout_batch: bounds the KV
    # cache); keys are per prompt, so the samples depend on neither (sampling/samplers.py)
    t0 = time.perf_counter()
    res = samplers.sample(
        rl.sampler,
        cfg,
        params,
        tokens_BS,
        lens_B,
        keys_BG,
        batch=shapes.sample_B,
        max_new_tokens=shapes.R,
        strategy=strategy,
        eos_ids=tuple(tokenizer.eos_ids),
        prefill_chunk=prefill_chunk,
    )
    out = sampler.SampleOutput(res.tokens_PGR, res.logprobs_PGR, res.lengths_PG, res.finish_PG, steps=res.decode_steps)
    t1 = time.perf_counter()
    eos = set(tokenizer.eos_ids)
    responses, logps, texts, items = [], [], [], []
    for b, rec in enumerate(records):
        for g in range(G):
            n = int(out.lengths_BG[b, g])
            toks = [int(t) for t in out.tokens_BGR[b, g, :n]]
            logps.append(np.asarray(out.logprobs_BGR[b, g, :n], np.float32))
            body = toks[:-1] if toks and toks[-1] in eos else toks
            text = rewards.strip_eos(tokenizer.decode(body), tokenizer.eos_text)
            responses.append(toks)
            texts.append(text)
            items.append(rewards.ScoreItem(rec.data_source, text, rec.ground_truth, rec.question))
    score = np.asarray(rewards.hybrid_scores(items, judge), np.float32)
    length = out.lengths_BG.reshape(-1).astype(np.int32)
    reward = np.asarray(
        [
            rewards.shape_reward(
                float(s), int(n), max_response_length=shapes.R, buffer_len=rl.overlong_buffer, factor=rl.overlong_factor
            )
            for s, n in zip(score, length)
        ],
        np.float32,
    )
    truncated = out.finish_BG.reshape(-1) == decode.FINISH_LENGTH
    return Rollout(
        list(map(list, prompts)),
        responses,
        logps,
        texts,
        score,
        reward,
        (score == 1.0),
        length,
        truncated,
        res.token_steps,
        generate_s=t1 - t0,
        reward_s=time.perf_counter() - t1,
    )
