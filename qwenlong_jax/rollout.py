"""Generate G responses per prompt with the sampler, decode them, and reward them.

One call = one generation round of one RL step: gen_B prompts -> gen_B x G samples, with static
shapes per phase (prompts padded to the phase's bucket, max_output new tokens), so the
sampler compiles once per phase. Rewards: hybrid rule+judge score of the text after the
last `</think>` (eos text removed first, as the reference's reward manager does), plus the
overlong penalty computed on the token length (rewards.shape_reward).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from qwenlong_jax import rewards, sharding
from qwenlong_jax.config import PhaseConfig, RLConfig
from qwenlong_jax.data.schema import Record
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.sampling import decode, sampler, strategies


@dataclasses.dataclass
class Rollout:
    prompts: list[list[int]]  # [B]
    responses: list[list[int]]  # [B*G], eos included when the sample stopped on it
    sampler_logps: list[np.ndarray]  # [B*G], float32 per response token: the sampler's log p (logits / T)
    texts: list[str]  # [B*G], eos removed
    score_N: np.ndarray  # rule (or hybrid) score
    reward_N: np.ndarray  # score + overlong penalty (what the advantages use)
    acc_N: np.ndarray  # score == 1 (what dynamic sampling filters on)
    length_N: np.ndarray
    truncated_N: np.ndarray


PREFILL_CHUNK = 512  # prompt tokens per prefill step; prompts are padded to a multiple of it


def prompt_bucket(phase: PhaseConfig, prefill_chunk: int = PREFILL_CHUNK) -> int:
    return sampler.bucket_length(phase.max_input, prefill_chunk)


@dataclasses.dataclass(frozen=True)
class RLStepShapes:
    """The shapes one RL step compiles for (the trainer builds them, the planner prices them).

    B prompts x G responses; prompts padded to S, responses capped at R; each group packed into
    one row of W = S + G*R (rounded to 64); `updates` optimizer updates of `micro` micro-batches
    of `rows` groups (per PPO epoch); `gen_B` prompts per generation round (DAPO), sampled
    `sample_B` prompts per sampling call."""
    B: int
    G: int
    S: int
    R: int
    W: int
    rows: int
    updates: int
    micro: int
    sample_B: int
    gen_B: int


def rl_step_shapes(phase: PhaseConfig, rl: RLConfig, prefill_chunk: int = PREFILL_CHUNK) -> RLStepShapes:
    G, R, B = rl.group_size, phase.max_output, phase.batch
    S = prompt_bucket(phase, prefill_chunk)
    mini = min(rl.mini_batch, B)
    micro = rl.micro_batch or mini
    return RLStepShapes(B=B, G=G, S=S, R=R, W=-(-(S + G * R) // 64) * 64, rows=micro, updates=B // mini,
                        micro=mini // micro, sample_B=rl.rollout_batch or rl.gen_batch or B,
                        gen_B=rl.gen_batch or B)


def rollout(cfg: ModelConfig, params, tokenizer, records: Sequence[Record], prompts: Sequence[list[int]],
            *, phase: PhaseConfig, rl: RLConfig, key: jax.Array, judge=None,
            prefill_chunk: int = 512, mesh=None) -> Rollout:
    G = rl.group_size
    S = prompt_bucket(phase, prefill_chunk)
    tokens_BS, lens_B = sampler.pad_prompts(prompts, S, pad_id=tokenizer.pad_id)
    keys_BG = sampler.sample_keys(key, np.arange(len(prompts)), G)
    strategy = strategies.from_flags(rl.temperature, rl.top_p, rl.top_k, 0.0)
    # rl.rollout_batch prompts per sampling call bound the KV cache; keys are per prompt, so
    # the samples do not depend on the chunking.
    chunk = rl.rollout_batch or len(prompts)
    parts = [sharding.to_host(sampler.sample_groups(
        cfg, params, tokens_BS[i:i + chunk], lens_B[i:i + chunk], keys_BG[i:i + chunk],
        max_new_tokens=phase.max_output, strategy=strategy, eos_ids=tuple(tokenizer.eos_ids),
        prefill_chunk=prefill_chunk)) for i in range(0, len(prompts), chunk)]
    out = sampler.SampleOutput(*(np.concatenate([getattr(p, f) for p in parts])
                                 for f in ("tokens_BGR", "logprobs_BGR", "lengths_BG", "finish_BG")),
                               steps=max(int(p.steps) for p in parts))
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
    reward = np.asarray([rewards.shape_reward(float(s), int(n), max_response_length=phase.max_output,
                                              buffer_len=rl.overlong_buffer, factor=rl.overlong_factor)
                         for s, n in zip(score, length)], np.float32)
    truncated = out.finish_BG.reshape(-1) == decode.FINISH_LENGTH
    return Rollout(list(map(list, prompts)), responses, logps, texts, score, reward,
                   (score == 1.0), length, truncated)
