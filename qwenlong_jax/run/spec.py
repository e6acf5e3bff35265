"""A run's spec: every fact that follows from (config, devices), worked out once and frozen.

    spec = RunSpec.build(cfg, run_mesh(cfg, devices), tokenizer=True)  # the trainer: real devices
    spec = RunSpec.build(cfg, mesh)           # the compile check: a mesh of compile-only devices
    spec = RunSpec.build(cfg, run_mesh(cfg, num_devices=64))  # the planner: an abstract mesh

It holds the model config of the model actually trained (model.init_from's config.json when set,
read once), the tokenizer (loaded once; for the planner and the compile check only when the
model takes its vocabulary), the mesh, each phase's step shapes, where the KL reference comes
from, the loss settings, and the abstract train state with its shardings. The trainer
(run/context.py), the memory planner (capacity/planner.py) and the compile check
(capacity/compile_jobs.py) read it, so they validate, price and compile the same run. On a real
mesh the config is validated here (config/validation.py), before anything compiles.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from typing import Any

import jax

from qwenlong_jax import models
from qwenlong_jax.config import Config, ConfigError, PhaseConfig, PhaseKind
from qwenlong_jax.config.model import model_config, needs_tokenizer_vocab, tokenizer_path
from qwenlong_jax.config.validation import validate_run
from qwenlong_jax.parallel import sharding
from qwenlong_jax.rl.grpo_step import LossSettings
from qwenlong_jax.run import step_fns
from qwenlong_jax.run.step_shapes import RLStepShapes, SFTStepShapes, rl_step_shapes, sft_step_shapes
from qwenlong_jax.run.train_state import TrainState, make_optimizer


class Reference(enum.StrEnum):
    """Where the KL reference policy comes from; the train state holds one unless NONE."""

    NONE = "none"  # rl.kl_coef is 0, or the run has no RL phase
    CHECKPOINT = "checkpoint"  # rl.ref_from: one fixed reference for the whole run
    PHASE_START = "phase_start"  # a frozen copy of each RL phase's starting policy


@dataclasses.dataclass(frozen=True)
class PhaseSpec:
    """One phase and the shapes its jitted step compiles for."""

    phase: PhaseConfig
    shapes: RLStepShapes | SFTStepShapes

    @property
    def name(self) -> str:
        return self.phase.name

    @property
    def kind(self) -> PhaseKind:
        return self.phase.kind


@dataclasses.dataclass(frozen=True, eq=False)
class RunSpec:
    """Every fact of a run that follows from (config, devices); build() works them out once."""

    cfg: Config
    mesh: Any  # jax.sharding.Mesh, or an AbstractMesh when planning for devices this host lacks
    mcfg: models.ModelConfig  # the model trained: validated, planned and compiled alike
    tok: Any  # data.tokenizer.Tokenizer, or None when nothing needed it (planner, compile check)
    tok_path: str
    phases: tuple[PhaseSpec, ...]  # in cfg.phases order
    reference: Reference
    loss: LossSettings  # the GRPO loss of every RL phase
    tx: Any  # the optax optimizer
    batch_axes: int  # how many ways the mesh splits a batch (data * fsdp)

    @classmethod
    def build(cls, cfg: Config, mesh, *, tokenizer: bool = False) -> RunSpec:
        """The spec of `cfg` on `mesh` (run_mesh). On a real mesh the config is validated against
        it; an abstract one (planning for devices this host lacks) is only priced. tokenizer: load
        it even when the model config does not need its vocabulary (the trainer reads data)."""
        tok_path = tokenizer_path(cfg)
        tok = load_tokenizer(cfg, tok_path) if tokenizer or needs_tokenizer_vocab(cfg) else None
        mcfg = model_config(cfg, tok.vocab_size if tok is not None else None)
        batch_axes = sharding.batch_axis_size(mesh)
        phases = tuple(
            PhaseSpec(p, rl_step_shapes(p, cfg.rl) if p.kind == PhaseKind.RL else sft_step_shapes(p, batch_axes))
            for p in cfg.phases
        )
        if isinstance(mesh, jax.sharding.Mesh):
            validate_run(cfg, mcfg, mesh, {p.name: p.shapes for p in phases})
        has_rl = any(p.kind == PhaseKind.RL for p in cfg.phases)
        reference = (
            Reference.NONE
            if not (cfg.rl.kl_coef and has_rl)
            else Reference.CHECKPOINT
            if cfg.rl.ref_from
            else Reference.PHASE_START
        )
        return cls(
            cfg=cfg,
            mesh=mesh,
            mcfg=mcfg,
            tok=tok,
            tok_path=tok_path,
            phases=phases,
            reference=reference,
            loss=LossSettings.from_rl(cfg.rl),
            tx=make_optimizer(cfg.optim),
            batch_axes=batch_axes,
        )

    @classmethod
    def planned(cls, cfg: Config, num_devices: int | None = None) -> RunSpec:
        """The spec the planner prices: `cfg` on an abstract mesh of `num_devices` devices
        (default: the config mesh's size when fixed, else 1); nothing is checked against devices."""
        sizes = cfg.mesh.sizes()
        n = num_devices or (1 if -1 in sizes else math.prod(sizes))
        return cls.build(cfg, run_mesh(cfg, num_devices=n))

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    @property
    def holds_reference(self) -> bool:
        """Whether the train state holds the frozen KL reference (priced and compiled with it)."""
        return self.reference != Reference.NONE

    @functools.cached_property
    def param_sharding(self):
        """The params' shardings (a pytree like the params), by the rules table."""
        return sharding.param_shardings(models.logical_axes(self.mcfg), models.param_shapes(self.mcfg), self.mesh)

    @functools.cached_property
    def state_sharding(self) -> TrainState:
        """The train state's shardings: params by the rules table, optimizer moments like their
        parameters, the KL reference (unless Reference.NONE) like the params."""
        return step_fns.state_shardings(self._abstract_state, self.param_sharding, self.mesh)

    @functools.cached_property
    def abstract_state(self) -> TrainState:
        """The train state as jax.ShapeDtypeStructs with their shardings (nothing allocated)."""
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), self._abstract_state, self.state_sharding
        )

    @functools.cached_property
    def _abstract_state(self) -> TrainState:
        params = models.param_shapes(self.mcfg)
        state = jax.eval_shape(lambda p: TrainState.create(p, self.tx), params)
        return state if self.reference == Reference.NONE else state.replace(ref_params=state.params)


def load_tokenizer(cfg: Config, path: str):
    """The tokenizer at `path`, or a ConfigError naming where it came from."""
    from qwenlong_jax.data.tokenizer import load_tokenizer as load

    try:
        return load(path)
    except (ValueError, OSError, RuntimeError) as e:  # missing, not a tokenizer: one line
        raise ConfigError(
            f"tokenizer ({'data.tokenizer' if cfg.data.tokenizer else 'from the model'}"
            f" {path}): {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


def run_mesh(cfg: Config, devices=None, *, num_devices: int | None = None):
    """The config's mesh over `devices` (default: all), or over `num_devices` devices as an
    AbstractMesh (the planner); mesh sizes that do not match are a ConfigError."""
    try:
        if num_devices is not None:
            return sharding.abstract_mesh(cfg.mesh, num_devices)
        return sharding.make_mesh(cfg.mesh, devices)
    except ValueError as e:
        raise ConfigError(str(e)) from None
