"""A run's train state: made fresh, its KL reference, and the jitted steps that take it.

    state = init_state(ctx)              # params (model.init_from, else random), optimizer state
    ref = reference(ctx, state.params)   # rl.ref_from, else a copy of the params
    steps = JittedSteps(ctx, state)      # the jitted updates, with the state's shardings

The layout of every part comes from the run's spec (RunSpec.state_sharding), the same the
compile check compiles for.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from qwenlong_jax import models, paths
from qwenlong_jax.config import ConfigError
from qwenlong_jax.config.model import exec_overrides
from qwenlong_jax.rl import grpo_step
from qwenlong_jax.run import step_fns
from qwenlong_jax.run.context import RunContext
from qwenlong_jax.run.spec import Reference
from qwenlong_jax.run.train_state import TrainState


def init_state(ctx: RunContext) -> TrainState:
    """Params (model.init_from, else a random init from cfg.seed), optimizer state laid out like
    the params, and the KL reference when the run keeps one."""
    spec, m = ctx.spec, ctx.cfg.model
    if m.init_from:
        params = _load(m.init_from, "model.init_from", ctx)
    else:
        params = jax.jit(lambda k: models.init_params(spec.mcfg, k), out_shardings=spec.param_sharding)(
            jax.random.key(ctx.cfg.seed)
        )
    # Moments laid out like their parameters (left to propagation, XLA:TPU replicates them).
    create = lambda p: TrainState.create(p, spec.tx)  # noqa: E731
    state = jax.jit(create, out_shardings=spec.state_sharding.replace(ref_params=None))(params)
    if spec.holds_reference:
        state = state.replace(ref_params=reference(ctx, state.params))
    return state


def _load(path: str, field: str, ctx: RunContext):
    """The params of the HF checkpoint `path`, whose model config must be the run's."""
    m = ctx.cfg.model
    try:
        mcfg, params = models.load_hf_checkpoint(
            paths.local_copy(path), jnp.dtype(m.param_dtype), mesh=ctx.mesh, overrides=exec_overrides(m)
        )
    except models.CheckpointError:
        raise
    except (OSError, ValueError, RuntimeError) as e:  # e.g. a corrupt safetensors header: one line
        raise models.CheckpointError(
            f"{field} {path}: cannot read the checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    if mcfg != ctx.mcfg:
        raise ConfigError(
            f"{field}={path}: its model config differs from the trained model's "
            "(the reference must share the architecture)"
            if field == "rl.ref_from"
            else f"{field}={path}: its config.json changed while the run was being set up"
        )
    return params


def reference(ctx: RunContext, params):
    """The KL reference: the checkpoint rl.ref_from, else a copy of `params` (a phase's start)."""
    if ctx.spec.reference == Reference.CHECKPOINT:
        return _load(ctx.cfg.rl.ref_from, "rl.ref_from", ctx)
    return jax.tree.map(jnp.copy, params)  # distinct buffers: the state is donated


class JittedSteps:
    """The run's jitted updates (step_fns: one definition with the compile check), built on first
    use with the shardings of the live state (the state is donated, so they must match)."""

    def __init__(self, ctx: RunContext, state: TrainState):
        self.mcfg, self.tx, self.mesh = ctx.mcfg, ctx.spec.tx, ctx.mesh
        self.state_sharding = jax.tree.map(lambda x: x.sharding, state)

    def rows_sharding(self, ndim_lead: int, ndim_tail: int):
        return step_fns.rows_sharding(self.mesh, ndim_lead, ndim_tail)

    @functools.cached_property
    def sft(self):
        return step_fns.sft_update_fn(self.mcfg, self.tx, self.mesh, self.state_sharding)

    @functools.cache  # noqa: B019 (one JittedSteps per run)
    def grpo(self, ls: grpo_step.LossSettings):
        """(update, logp_fn, agree_fn) for these loss settings."""
        return step_fns.grpo_fns(self.mcfg, ls, self.tx, self.mesh, self.state_sharding)
