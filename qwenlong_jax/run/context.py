"""A run's set-up: its spec plus what the steps read besides it (data, judge), built once.

    ctx = setup(cfg, workdir)            # paths checked, RunSpec, memory check, judge, data
    state = init_state(ctx)              # params (init or model.init_from), sharded (state.py)
    steps = JittedSteps(ctx, state)      # the jitted updates, with the state's shardings

Everything here runs before anything compiles, so a bad config fails in one line (ConfigError)
before any step is built. The steps themselves are sft_round.sft_step and rl_round.rl_step.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from qwenlong_jax import rewards
from qwenlong_jax.capacity import planner
from qwenlong_jax.config import Config, ConfigError, PhaseKind
from qwenlong_jax.config.validation import check_paths
from qwenlong_jax.data.run_data import RunData, load_run_data
from qwenlong_jax.eval.sweep import accuracy_by_length
from qwenlong_jax.parallel import distributed
from qwenlong_jax.run.curriculum import phase_records
from qwenlong_jax.run.spec import RunSpec, run_mesh


@dataclasses.dataclass(frozen=True, eq=False)
class RunContext:
    """What the steps of a run read; nothing in it changes during the run (the prompt cache
    only memoises the tokenizer)."""

    spec: RunSpec
    workdir: str
    judge: Any  # rewards judge, or None (rule scores only)
    data: RunData
    by_id: dict  # record id -> record (train and SFT), to restore the data iterators
    per_phase: list  # each phase's records, in cfg.phases order
    prompt_cache: dict = dataclasses.field(default_factory=dict)

    @property
    def cfg(self) -> Config:
        return self.spec.cfg

    @property
    def mesh(self):
        return self.spec.mesh

    @property
    def mcfg(self):
        return self.spec.mcfg

    @property
    def tok(self):
        return self.spec.tok

    def prompt(self, rec) -> list[int]:
        """The record's chat prompt, tokenised once per run."""
        if rec.id not in self.prompt_cache:
            self.prompt_cache[rec.id] = self.tok.chat_prompt(rec.prompt)
        return self.prompt_cache[rec.id]


def setup(cfg: Config, workdir: str, *, judge=None, devices=None) -> RunContext:
    """Paths, the run's spec (mesh, tokenizer, model config, shapes: validated), the memory
    check, judge and data of a run."""
    check_paths(cfg, workdir)  # the workdir made, every path the config names readable
    if cfg.distributed:
        distributed.initialize(cfg.coordinator_address, cfg.num_processes, cfg.process_id)
    # devices: all by default (tests pass a subset)
    spec = RunSpec.build(cfg, run_mesh(cfg, devices), tokenizer=True)
    local = sum(d.process_index == jax.process_index() for d in spec.mesh.devices.flat)
    hbm = planner.device_memory_bytes(local)  # HBM, or on CPU the host's memory per device
    if hbm:
        planner.check_fits(spec, hbm)  # refuse a phase that cannot fit
    judge = judge if judge is not None else make_judge(cfg)
    data = load_run_data(cfg, spec.tok)
    by_id = {r.id: r for r in data.train + data.sft}
    per_phase = [phase_records(data.sft if p.kind == PhaseKind.SFT else data.train, p) for p in cfg.phases]
    for p, recs in zip(cfg.phases, per_phase):  # before compiling, not at the phase's start
        if not recs:
            pool = data.sft if p.kind == PhaseKind.SFT else data.train
            raise ConfigError(
                f"phases[{p.name}]: no {'SFT (with a response) ' if p.kind == PhaseKind.SFT else ''}example has a "
                f"prompt length in ({p.min_input}, {p.max_input}] tokens ({len(pool)} loaded"
                f"{'; ' + data.report if data.report else ''}); check data files or the phase's range"
            )
    return RunContext(spec=spec, workdir=workdir, judge=judge, data=data, by_id=by_id, per_phase=per_phase)


def make_judge(cfg: Config):
    """The LLM judge of cfg.judge, or None without a url."""
    j = cfg.judge
    if not j.url:
        return None
    if j.api_key_env and j.api_key_env not in os.environ:
        raise ConfigError(
            f"judge.api_key_env: ${j.api_key_env} is not set; export it, or pass "
            "--config.judge.api_key_env='' for an endpoint that needs no key"
        )
    try:
        return rewards.OpenAIJudge(j)
    except ValueError as e:  # e.g. a url without http(s)://
        raise ConfigError(f"judge: {e}") from None


def evaluate(ctx: RunContext, params) -> dict:
    """Greedy held-out accuracy per context length (rule score, eval.sweep)."""
    if not ctx.data.heldout:
        return {}
    res = accuracy_by_length(
        ctx.mcfg, params, ctx.tok, ctx.data.heldout, max_new_tokens=ctx.cfg.data.eval_max_new_tokens, mesh=ctx.mesh
    )
    return {f"heldout/acc@{n}": float(a) for n, a in res["by_length"].items() if a is not None}
