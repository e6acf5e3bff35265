"""The jitted steps of a run, with their shardings: one definition for the trainer and the
ahead-of-time compile check (`python -m qwenlong_jax.compile`).

    update = sft_update_fn(mcfg, tx, mesh, state_sharding)
    update, logp = grpo_fns(mcfg, loss_settings, tx, mesh, state_sharding)
    batch_sharding = rows_sharding(mesh, 2, 1)     # [M, U, rows, W]: rows over the batch axes

Explicit shardings: the state keeps the layout it was created with (params by the rules table,
optimizer moments alike), batches are split over the mesh's batch axes on their rows
dimension, metrics are replicated. The state is donated.
"""
from __future__ import annotations

import jax

from qwenlong_jax import sharding
from qwenlong_jax.rl import grpo_step
from qwenlong_jax.rl.sft_step import sft_update

SFT_KEYS = ("tokens_BW", "positions_BW", "segment_ids_BW", "loss_mask_BW")
GRPO_TOKEN_KEYS = ("unpack_idx_NR", "mask_NR", "old_logp_NR")


def rows_sharding(mesh, ndim_lead: int, ndim_tail: int):
    return sharding.named(mesh, *([None] * ndim_lead), "batch", *([None] * ndim_tail))


def sft_batch_sharding(mesh) -> dict:
    return {k: rows_sharding(mesh, 1, 1) for k in SFT_KEYS}


def grpo_batch_sharding(mesh) -> dict:
    out = {k: rows_sharding(mesh, 2, 1) for k in grpo_step.ROW_KEYS + GRPO_TOKEN_KEYS}
    out["adv_N"] = rows_sharding(mesh, 2, 0)
    return out


def sft_update_fn(mcfg, tx, mesh, state_sharding):
    return jax.jit(lambda s, b: sft_update(mcfg, tx, s, b), donate_argnums=0,
                   in_shardings=(state_sharding, sft_batch_sharding(mesh)),
                   out_shardings=(state_sharding, sharding.replicated(mesh)))


def grpo_fns(mcfg, ls: grpo_step.LossSettings, tx, mesh, state_sharding):
    """(update, old-logprob pass) of one GRPO step."""
    batch_sh = grpo_batch_sharding(mesh)
    update = jax.jit(lambda s, b: grpo_step.grpo_update(mcfg, ls, tx, s, b), donate_argnums=0,
                     in_shardings=(state_sharding, batch_sh),
                     out_shardings=(state_sharding, sharding.replicated(mesh)))
    logp = jax.jit(lambda p, b: grpo_step.policy_logprobs(mcfg, ls, p, b),
                   in_shardings=(state_sharding.params, batch_sh),
                   out_shardings=rows_sharding(mesh, 2, 1))
    return update, logp


def state_shardings(abstract_state, param_sharding, mesh):
    """Shardings of a TrainState: params by the rules table, every optimizer leaf that mirrors a
    parameter (AdamW mu/nu) like that parameter, scalars replicated.

    Pass these as `out_shardings` when creating the state: left to propagation, zeros_like
    moments carry no data dependency on the parameters and XLA:TPU replicates them (the
    AdamW state of a 32B model then needs 259 GiB per chip: found by the compile check)."""
    by_path = {tuple(path): s for path, s in
               jax.tree_util.tree_flatten_with_path(param_sharding)[0]}
    shapes = {tuple(path): x.shape for path, x in
              jax.tree_util.tree_flatten_with_path(abstract_state.params)[0]}
    rep = sharding.replicated(mesh)

    def opt_leaf(path, x):
        path = tuple(path)
        for i in range(len(path)):  # the longest suffix that is a parameter's path
            s = by_path.get(path[i:])
            if s is not None and shapes[path[i:]] == x.shape:
                return s
        return rep

    return abstract_state.replace(
        step=rep, params=param_sharding, nonfinite_in_a_row=rep, nonfinite_total=rep,
        opt_state=jax.tree_util.tree_map_with_path(opt_leaf, abstract_state.opt_state))
