"""A run's set-up: everything its steps read, built once from the config and then frozen.

    ctx = setup(cfg, workdir)            # mesh, tokenizer, the one model config, data, optimizer
    state = init_state(ctx)              # params (init or checkpoint) and optimizer state, sharded
    steps = JittedSteps(ctx, state)      # the jitted updates, with the state's shardings

Everything here runs before anything compiles, so a bad config fails in one line (ConfigError)
before any step is built. The steps themselves are sft_round.sft_step and rl_round.rl_step.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp

from qwenlong_jax import config as config_lib
from qwenlong_jax import distributed, models, paths, rewards, sharding
from qwenlong_jax.capacity import planner
from qwenlong_jax.run import step_fns
from qwenlong_jax.config import Config, PhaseKind
from qwenlong_jax.run.curriculum import phase_records
from qwenlong_jax.data.tokenizer import load_tokenizer
from qwenlong_jax.datasets import RunData, load_run_data
from qwenlong_jax.eval.sweep import accuracy_by_length
from qwenlong_jax.rl import grpo_step
from qwenlong_jax.run.setup import check_paths, exec_overrides, model_config, tokenizer_path, validate_run
from qwenlong_jax.run.train_state import TrainState, make_optimizer


@dataclasses.dataclass(frozen=True, eq=False)
class RunContext:
    """What the steps of a run read; nothing in it changes during the run (the prompt cache
    only memoises the tokenizer)."""
    cfg: Config
    workdir: str
    mesh: jax.sharding.Mesh
    tok: Any  # data.tokenizer.Tokenizer
    tok_path: str
    mcfg: models.ModelConfig  # the model trained: validated, planned and built alike
    p_shard: Any  # the params' shardings (a pytree like the params)
    judge: Any  # rewards judge, or None (rule scores only)
    data: RunData
    by_id: dict  # record id -> record (train and SFT), to restore the data iterators
    per_phase: list  # each phase's records, in cfg.phases order
    tx: Any  # the optax optimizer
    prompt_cache: dict = dataclasses.field(default_factory=dict)

    def prompt(self, rec) -> list[int]:
        """The record's chat prompt, tokenised once per run."""
        if rec.id not in self.prompt_cache:
            self.prompt_cache[rec.id] = self.tok.chat_prompt(rec.prompt)
        return self.prompt_cache[rec.id]


def setup(cfg: Config, workdir: str, *, judge=None, devices=None) -> RunContext:
    """Mesh, tokenizer, model config, pre-compile checks, judge, data and optimizer of a run."""
    check_paths(cfg, workdir)  # the workdir made, every path the config names readable
    if cfg.distributed:
        distributed.initialize(cfg.coordinator_address, cfg.num_processes, cfg.process_id)
    try:
        mesh = sharding.make_mesh(cfg.mesh, devices)  # devices: all by default (tests pass a subset)
    except ValueError as e:  # mesh sizes that do not match the devices: a config error
        raise config_lib.ConfigError(str(e)) from None
    tok_path = tokenizer_path(cfg)
    try:
        tok = load_tokenizer(tok_path)
    except (ValueError, OSError, RuntimeError) as e:  # missing, not a tokenizer: one line
        raise config_lib.ConfigError(f"tokenizer ({'data.tokenizer' if cfg.data.tokenizer else 'from the model'}"
                                     f" {tok_path}): {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                                     ) from None
    mcfg = model_config(cfg, tok.vocab_size)  # validated, planned and trained alike
    validate_run(cfg, mcfg, mesh)
    local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    hbm = planner.device_memory_bytes(local)  # HBM, or on CPU the host's memory per device
    if hbm:
        planner.check_fits(cfg, mesh.size, hbm, mcfg)  # refuse a phase that cannot fit
    p_shard = sharding.param_shardings(models.logical_axes(mcfg), models.param_shapes(mcfg), mesh)
    judge = judge if judge is not None else make_judge(cfg)
    data = load_run_data(cfg, tok)
    by_id = {r.id: r for r in data.train + data.sft}
    per_phase = [phase_records(data.sft if p.kind == PhaseKind.SFT else data.train, p) for p in cfg.phases]
    for p, recs in zip(cfg.phases, per_phase):  # before compiling, not at the phase's start
        if not recs:
            pool = data.sft if p.kind == PhaseKind.SFT else data.train
            raise config_lib.ConfigError(
                f"phases[{p.name}]: no {'SFT (with a response) ' if p.kind == PhaseKind.SFT else ''}example has a "
                f"prompt length in ({p.min_input}, {p.max_input}] tokens ({len(pool)} loaded"
                f"{'; ' + data.report if data.report else ''}); check data files or the phase's range")
    return RunContext(cfg=cfg, workdir=workdir, mesh=mesh, tok=tok, tok_path=tok_path, mcfg=mcfg,
                      p_shard=p_shard, judge=judge, data=data, by_id=by_id, per_phase=per_phase,
                      tx=make_optimizer(cfg.optim))


def make_judge(cfg: Config):
    """The LLM judge of cfg.judge, or None without a url."""
    j = cfg.judge
    if not j.url:
        return None
    if j.api_key_env and j.api_key_env not in os.environ:
        raise config_lib.ConfigError(
            f"judge.api_key_env: ${j.api_key_env} is not set; export it, or pass "
            "--config.judge.api_key_env='' for an endpoint that needs no key")
    try:
        return rewards.OpenAIJudge(j)
    except ValueError as e:  # e.g. a url without http(s)://
        raise config_lib.ConfigError(f"judge: {e}") from None


def init_state(ctx: RunContext) -> TrainState:
    """Params (model.init_from, else a random init from cfg.seed), optimizer state laid out like
    the params, and the KL reference when an RL phase needs one."""
    cfg, m = ctx.cfg, ctx.cfg.model
    if m.init_from:
        try:
            mcfg, params = models.load_hf_checkpoint(paths.local_copy(m.init_from), jnp.dtype(m.param_dtype),
                                                     mesh=ctx.mesh, overrides=exec_overrides(m))
        except models.CheckpointError:
            raise
        except (OSError, ValueError, RuntimeError) as e:  # e.g. a corrupt safetensors header: one line
            raise models.CheckpointError(
                f"model.init_from {m.init_from}: cannot read the checkpoint "
                f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        assert mcfg == ctx.mcfg, (mcfg, ctx.mcfg)  # model_config() read the same config.json
    else:
        params = jax.jit(lambda k: models.init_params(ctx.mcfg, k), out_shardings=ctx.p_shard)(
            jax.random.key(cfg.seed))
    # Moments laid out like their parameters (left to propagation, XLA:TPU replicates them).
    create = lambda p: TrainState.create(p, ctx.tx)  # noqa: E731
    out_sh = step_fns.state_shardings(jax.eval_shape(create, params), ctx.p_shard, ctx.mesh)
    state = jax.jit(create, out_shardings=out_sh)(params)
    if cfg.keeps_kl_reference:
        state = state.replace(ref_params=reference(ctx, state.params))
    return state


def reference(ctx: RunContext, params):
    """The KL reference: the checkpoint rl.ref_from, else a copy of `params` (a phase's start)."""
    ref_from = ctx.cfg.rl.ref_from
    if not ref_from:
        return jax.tree.map(jnp.copy, params)  # distinct buffers: the state is donated
    m = ctx.cfg.model
    rcfg, ref = models.load_hf_checkpoint(paths.local_copy(ref_from), jnp.dtype(m.param_dtype), mesh=ctx.mesh,
                                          overrides=exec_overrides(m))
    if rcfg != ctx.mcfg:
        raise config_lib.ConfigError(f"rl.ref_from={ref_from}: its model config differs from the trained "
                                     "model's (the reference must share the architecture)")
    return ref


class JittedSteps:
    """The run's jitted updates (step_fns: one definition with the compile check), built on first
    use with the shardings of the live state (the state is donated, so they must match)."""

    def __init__(self, ctx: RunContext, state: TrainState):
        self.mcfg, self.tx, self.mesh = ctx.mcfg, ctx.tx, ctx.mesh
        self.state_sharding = jax.tree.map(lambda x: x.sharding, state)

    def rows_sharding(self, ndim_lead: int, ndim_tail: int):
        return step_fns.rows_sharding(self.mesh, ndim_lead, ndim_tail)

    @functools.cached_property
    def sft(self):
        return step_fns.sft_update_fn(self.mcfg, self.tx, self.mesh, self.state_sharding)

    @functools.lru_cache(maxsize=None)  # noqa: B019 (one JittedSteps per run)
    def grpo(self, ls: grpo_step.LossSettings):
        """(update, logp_fn, agree_fn) for these loss settings."""
        return step_fns.grpo_fns(self.mcfg, ls, self.tx, self.mesh, self.state_sharding)


def evaluate(ctx: RunContext, params) -> dict:
    """Greedy held-out accuracy per context length (rule score, eval.sweep)."""
    if not ctx.data.heldout:
        return {}
    res = accuracy_by_length(ctx.mcfg, params, ctx.tok, ctx.data.heldout,
                             max_new_tokens=ctx.cfg.data.eval_max_new_tokens, mesh=ctx.mesh)
    return {f"heldout/acc@{n}": float(a) for n, a in res["by_length"].items() if a is not None}
