"""One RL step: sample -> reward -> filter -> pack -> update (docs/design.md).

    state, metrics, by_update = rl_step(ctx, steps, state, step, shapes, pdata, difficulty)

`sample_groups` generates rounds of gen_B prompts until B groups carry a learning signal (DAPO:
the groups whose accuracy varies; every group without dynamic sampling), keeping every valid
group of every round; `update` trains on the first B of them (the rest, the surplus of the last
round, is counted and dropped: the next step samples afresh from the newer policy). A round's
hard-pool prompts are shuffled in among its fresh ones (curriculum.PhaseData.next_batch), so the
cut drops hard and fresh groups alike; `hard_trained` counts the hard groups kept beside
`hard_drawn`, the hard prompts generated for. Short of B
after max_gen_rounds, the batch is padded with empty groups, which the update never learns from
(grpo_step). Keys derive from (seed, step, round), so a resumed run samples the same.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from qwenlong_jax.rl import dynamic_batch, grpo_step, packing
from qwenlong_jax.rl.advantages import group_advantages
from qwenlong_jax.rl.dynamic_sampling import varying_groups
from qwenlong_jax.run.context import RunContext
from qwenlong_jax.run.curriculum import Difficulty, PhaseData
from qwenlong_jax.run.rollout import rollout
from qwenlong_jax.run.state import JittedSteps
from qwenlong_jax.run.step_shapes import RLStepShapes


@dataclasses.dataclass(frozen=True)
class Group:
    """One prompt's G samples: prompt ids, response ids, rewards [G], sampler logprobs."""

    record: object
    hard: bool  # drawn from the hard pool (retrospective sampling)
    prompt: list
    responses: list
    reward_G: np.ndarray
    sampler_logps: list


@dataclasses.dataclass(frozen=True)
class Samples:
    """Every group a step generated, which of them are kept, and the sampling metrics."""

    pool: list[Group]  # every generated group, in arrival order
    groups: list[int]  # pool indices of the (first B) valid groups the update trains on
    metrics: dict


def sample_groups(
    ctx: RunContext, state, step: int, shapes: RLStepShapes, pdata: PhaseData, difficulty: Difficulty
) -> Samples:
    """Sample, reward and filter rounds of gen_B prompts until B valid groups (or max_gen_rounds)."""
    cfg, rl, G = ctx.cfg, ctx.cfg.rl, shapes.G
    B, gen_B = shapes.B, shapes.gen_B
    pool: list[Group] = []
    kept: list[int] = []  # pool indices of the valid groups, in arrival order
    all_reward, all_acc, all_len, all_trunc, all_score = [], [], [], [], []
    hard_drawn = rounds = filtered = 0
    t0 = time.time()
    gen_tokens = token_steps = 0
    generate_s = reward_s = 0.0
    while True:
        recs, hard_B = pdata.next_batch(gen_B, difficulty)
        hard_drawn += int(hard_B.sum())
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), step), rounds)
        with jax.set_mesh(ctx.mesh):
            ro = rollout(
                ctx.mcfg,
                state.params,
                ctx.tok,
                recs,
                [ctx.prompt(r) for r in recs],
                shapes=shapes,
                rl=rl,
                key=key,
                judge=ctx.judge,
            )
        rounds += 1
        gen_tokens += int(ro.length_N.sum())
        token_steps += ro.token_steps
        generate_s, reward_s = generate_s + ro.generate_s, reward_s + ro.reward_s
        reward_BG = ro.reward_N.reshape(gen_B, G)
        difficulty.update([r.id for r in recs], ro.score_N.reshape(gen_B, G).mean(1))
        valid_B = varying_groups(ro.acc_N.astype(np.float32), G) if rl.dynamic_sampling else np.ones(gen_B, bool)
        for b, r in enumerate(recs):
            if valid_B[b]:
                kept.append(len(pool))
            pool.append(
                Group(
                    r,
                    bool(hard_B[b]),
                    ro.prompts[b],
                    ro.responses[b * G : (b + 1) * G],
                    reward_BG[b],
                    ro.sampler_logps[b * G : (b + 1) * G],
                )
            )
        filtered += int((~valid_B).sum())
        all_reward.append(ro.reward_N)
        all_acc.append(ro.acc_N)
        all_len.append(ro.length_N)
        all_trunc.append(ro.truncated_N)
        all_score.append(ro.score_N)
        # Without dynamic sampling every group is valid: rounds run until the batch is full.
        if len(kept) >= B or (rl.dynamic_sampling and rounds >= rl.max_gen_rounds):
            break
    groups = kept[:B]
    gen_s = time.time() - t0
    metrics = {
        "reward_mean": float(np.mean(np.concatenate(all_reward))),
        "reward_std": float(np.std(np.concatenate(all_reward))),
        "score_mean": float(np.mean(np.concatenate(all_score))),
        "accuracy": float(np.mean(np.concatenate(all_acc))),
        "response_length": float(np.mean(np.concatenate(all_len))),
        "truncated_frac": float(np.mean(np.concatenate(all_trunc))),
        "generated_groups": float(len(pool)),
        "filtered_groups": float(filtered),
        "surplus_groups": float(len(kept) - len(groups)),
        "gen_rounds": float(rounds),
        "kept_groups": float(len(groups)),
        "hard_pool": float(len(pdata.hard_pool)),
        "hard_drawn": float(hard_drawn),
        "hard_trained": float(sum(pool[g].hard for g in groups)),
        "gen_tokens_per_s": gen_tokens / max(gen_s, 1e-9),
        # tokens kept / sample-steps computed (a finished sample idles until its call ends)
        "rollout_utilization": gen_tokens / max(token_steps, 1),
        "time/generate_seconds": generate_s,
        "time/reward_seconds": reward_s,
    }
    if ctx.judge is not None:
        js = ctx.judge.stats()
        metrics.update({"judge/calls": float(js.get("calls", 0)), "judge/failures": float(js.get("failures", 0))})
    return Samples(pool, groups, metrics)


def update(ctx: RunContext, steps: JittedSteps, state, samples: Samples, shapes: RLStepShapes):
    """Pack the kept groups (padded to B with empty ones) and take the GRPO update:
    (new state, update metrics, per-update metrics)."""
    rl, G = ctx.cfg.rl, shapes.G
    pool, groups = samples.pool, samples.groups
    t_pack = time.time()  # packing + logprobs + update, to the metrics on the host
    # Fixed shapes: pad to B groups with empty ones (mask 0: no loss, no gradient, and an
    # update whose mini-batch is all padding is not applied).
    pad = shapes.B - len(groups)
    prompts = [pool[g].prompt for g in groups] + [[ctx.tok.pad_id]] * pad
    responses = [resp for g in groups for resp in pool[g].responses] + [[]] * (G * pad)
    rewards_N = np.concatenate([pool[g].reward_G for g in groups] + [np.zeros(G * pad, np.float32)])
    adv_N = np.asarray(group_advantages(jnp.asarray(rewards_N), G, normalize_std=rl.normalize_std))
    rows = packing.pack_groups(prompts, responses, G, shapes.W, shapes.R)
    batch = grpo_step.grpo_batch(rows, adv_N, shapes.updates, shapes.micro)
    if rl.loss_scope == "dynamic":  # the reference's per-token weights (rl/dynamic_batch.py)
        seq_N = np.repeat([len(p) for p in prompts], G) + rows.mask_NR.sum(1)
        batch["coef_NR"] = dynamic_batch.token_coef(
            batch["mask_NR"], seq_N.reshape(batch["adv_N"].shape), rl.token_budget
        )
    sampler_NR = np.zeros(rows.mask_NR.shape, np.float32)
    for n, lp in enumerate(lp for g in groups for lp in pool[g].sampler_logps):
        sampler_NR[n, : len(lp)] = lp
    sampler_NR = sampler_NR.reshape(batch["mask_NR"].shape)
    ls = ctx.spec.loss
    update_fn, logp_fn, agree_fn = steps.grpo(ls)
    shard = {k: steps.rows_sharding(2, v.ndim - 3) for k, v in batch.items()}
    t1 = time.time()
    with jax.set_mesh(ctx.mesh):
        dev = jax.device_put(batch, shard)
        logp_in = {k: v for k, v in dev.items() if k not in ("old_logp_NR",) + ls.token_keys}
        dev["old_logp_NR"] = logp_fn(state.params, logp_in)
        if ls.kl_coef:  # the reference's logprobs: the same packed pass, frozen params
            dev["ref_logp_NR"] = logp_fn(state.ref_params, logp_in)
        is_weight, agree = agree_fn(jax.device_put(sampler_NR, shard["mask_NR"]), dev["old_logp_NR"], dev["mask_NR"])
        if ls.tis_cap:
            dev["is_weight_NR"] = is_weight
        state, m = update_fn(state, dev)
    m = jax.device_get(m)
    train_tokens = float(rows.mask_NR.sum() + sum(len(p) for p in prompts))
    metrics = {k: float(v) for k, v in jax.device_get(agree).items()}
    metrics.update(
        {
            "loss": m["actor_loss"],
            "pg_loss": m["pg_loss"],
            "clip_frac": m["clip_frac"],
            "entropy": m["entropy"],
            "approx_kl": m["approx_kl"],
            "grad_norm": m["grad_norm"],
            "ratio_mean": m["ratio_mean"],
            "ratio_max": m["ratio_max"],
            "updates": m["updates"],
            "empty_updates": m["empty_updates"],
            "nonfinite_updates": m["nonfinite_updates"],
            "train_tokens_per_s": train_tokens / max(time.time() - t1, 1e-9),
            "time/update_seconds": time.time() - t_pack,
        }
    )
    if ls.kl_coef:
        metrics["kl"] = m["kl"]
    return state, metrics, m["by_update"]


def rl_step(
    ctx: RunContext,
    steps: JittedSteps,
    state,
    step: int,
    shapes: RLStepShapes,
    pdata: PhaseData,
    difficulty: Difficulty,
):
    """(new state, metrics, per-update metrics or None when no group was kept) of one RL step at
    the phase's `shapes` (the RunSpec's)."""
    samples = sample_groups(ctx, state, step, shapes, pdata, difficulty)
    metrics = dict(samples.metrics)
    if not samples.groups:  # nothing to learn from: every update of the step is empty
        metrics.update(updates=0.0, empty_updates=float(shapes.updates * ctx.cfg.rl.epochs), nonfinite_updates=0.0)
        return state, metrics, None
    state, update_metrics, by_update = update(ctx, steps, state, samples, shapes)
    metrics.update(update_metrics)
    return state, {k: float(v) for k, v in metrics.items()}, by_update
