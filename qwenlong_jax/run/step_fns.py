"""The jitted steps of a run, with their shardings: one definition for the trainer and the
ahead-of-time compile check (`python -m qwenlong_jax.compile`).

    update = sft_update_fn(mcfg, tx, mesh, state_sharding)
    update, logp, agree = grpo_fns(mcfg, loss_settings, tx, mesh, state_sharding)
    batch_sharding = rows_sharding(mesh, 2, 1)     # [M, U, rows, W]: rows over the batch axes

Explicit shardings: the state keeps the layout it was created with (params by the rules table,
optimizer moments alike), batches are split over the mesh's batch axes on their rows
dimension, metrics are replicated. The state is donated.
"""

from __future__ import annotations

import jax

from qwenlong_jax.parallel import sharding
from qwenlong_jax.rl import grpo_step, old_logprobs
from qwenlong_jax.rl.sft_step import sft_update

SFT_KEYS = ("tokens_BW", "positions_BW", "segment_ids_BW", "loss_mask_BW")
GRPO_TOKEN_KEYS = ("unpack_idx_NR", "mask_NR", "old_logp_NR")


def rows_sharding(mesh, ndim_lead: int, ndim_tail: int):
    return sharding.named(mesh, *([None] * ndim_lead), "batch", *([None] * ndim_tail))


def sft_batch_sharding(mesh) -> dict:
    return {k: rows_sharding(mesh, 1, 1) for k in SFT_KEYS}


def grpo_batch_sharding(mesh, ls: grpo_step.LossSettings | None = None) -> dict:
    """Shardings of the update's batch: rows [M, U, Bm, W], tokens [M, U, Nm, R], adv [M, U, Nm];
    plus the loss settings' extra token arrays (reference logprobs, IS weights)."""
    extra = ls.token_keys if ls is not None else ()
    out = {k: rows_sharding(mesh, 2, 1) for k in grpo_step.ROW_KEYS + GRPO_TOKEN_KEYS + extra}
    out["adv_N"] = rows_sharding(mesh, 2, 0)
    return out


def sft_update_fn(mcfg, tx, mesh, state_sharding):
    return jax.jit(
        lambda s, b: sft_update(mcfg, tx, s, b),
        donate_argnums=0,
        in_shardings=(state_sharding, sft_batch_sharding(mesh)),
        out_shardings=(state_sharding, sharding.replicated(mesh)),
    )


def grpo_fns(mcfg, ls: grpo_step.LossSettings, tx, mesh, state_sharding):
    """(update, logprob pass, rollout agreement) of one GRPO step. The logprob pass computes
    old_logp with the step's params, and ref_logp with the frozen reference when KL is on."""
    tokens = rows_sharding(mesh, 2, 1)
    batch_sh = grpo_batch_sharding(mesh, ls)
    logp_sh = {k: v for k, v in batch_sh.items() if k not in ("old_logp_NR",) + ls.token_keys}
    update = jax.jit(
        lambda s, b: grpo_step.grpo_update(mcfg, ls, tx, s, b),
        donate_argnums=0,
        in_shardings=(state_sharding, batch_sh),
        out_shardings=(state_sharding, sharding.replicated(mesh)),
    )
    logp = jax.jit(
        lambda p, b: old_logprobs.policy_logprobs(mcfg, ls, p, b),
        in_shardings=(state_sharding.params, logp_sh),
        out_shardings=tokens,
    )
    agree = jax.jit(
        lambda s, o, m: old_logprobs.rollout_agreement(s, o, m, ls.tis_cap),
        in_shardings=(tokens, tokens, tokens),
        out_shardings=(tokens, sharding.replicated(mesh)),
    )
    return update, logp, agree


def state_shardings(abstract_state, param_sharding, mesh):
    """Shardings of a TrainState: params by the rules table, every optimizer leaf that mirrors a
    parameter (AdamW mu/nu) like that parameter, scalars replicated.

    Pass these as `out_shardings` when creating the state: left to propagation, zeros_like
    moments carry no data dependency on the parameters and XLA:TPU replicates them (the
    AdamW state of a 32B model then needs 259 GiB per chip: found by the compile check)."""
    by_path = {tuple(path): s for path, s in jax.tree_util.tree_flatten_with_path(param_sharding)[0]}
    shapes = {tuple(path): x.shape for path, x in jax.tree_util.tree_flatten_with_path(abstract_state.params)[0]}
    rep = sharding.replicated(mesh)

    def opt_leaf(path, x):
        path = tuple(path)
        for i in range(len(path)):  # the longest suffix that is a parameter's path
            s = by_path.get(path[i:])
            if s is not None and shapes[path[i:]] == x.shape:
                return s
        return rep

    return abstract_state.replace(
        step=rep,
        params=param_sharding,
        nonfinite_in_a_row=rep,
        nonfinite_total=rep,
        ref_params=None if abstract_state.ref_params is None else param_sharding,
        opt_state=jax.tree_util.tree_map_with_path(opt_leaf, abstract_state.opt_state),
    )
