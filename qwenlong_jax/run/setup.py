"""What a run is built from, as functions of its config: the tokenizer path, the model config of
the model actually trained, the checks that run before anything compiles, and each phase's length
and learning rate.

The trainer (trainer.py), the memory planner (plan.py) and the compile check (compile.py) all
call these, so they validate, price and compile the same model.
"""
from __future__ import annotations

import dataclasses
import math
import os

import jax

from qwenlong_jax import config as config_lib
from qwenlong_jax import models, paths, sharding
from qwenlong_jax.config import Config, PhaseConfig, PhaseKind, RLConfig
from qwenlong_jax.data.tokenizer import DEFAULT_TOKENIZER, find_tokenizer


def tokenizer_path(cfg: Config) -> str:
    """data.tokenizer when set; else a tokenizer inside the model (init_from, then hf_path;
    data.tokenizer.find_tokenizer's rule); else the embedded one."""
    return find_tokenizer(cfg.data.tokenizer, cfg.model.init_from, cfg.model.hf_path) or DEFAULT_TOKENIZER


def phase_steps(phase: PhaseConfig, num_records: int, rl: RLConfig | None = None) -> int:
    """A phase's steps: `steps`, else `epochs` passes over its examples. An SFT step takes
    `batch` examples; an RL step generates for one generation batch (rl.gen_batch, or the phase
    batch), and epochs count those, as the reference counts them (docs/recipe.md)."""
    if phase.steps:
        return phase.steps
    per_step = phase.batch
    if phase.kind == PhaseKind.RL:
        if rl is None:
            raise ValueError(f"phase_steps: RL phase {phase.name!r} needs the rl section (rl.gen_batch)")
        per_step = rl.gen_batch or phase.batch
    return max(1, math.ceil(phase.epochs * num_records / per_step))


def phase_lr(cfg: Config, phase: PhaseConfig, phase_step: int, n_steps: int) -> float:
    """optim.schedule within a phase: linear warmup, then constant or cosine to 10%."""
    o = cfg.optim
    lr = phase.lr or o.lr
    if o.warmup_steps and phase_step < o.warmup_steps:
        return lr * (phase_step + 1) / o.warmup_steps
    if o.schedule == "cosine":
        frac = (phase_step - o.warmup_steps) / max(n_steps - o.warmup_steps, 1)
        return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0))))
    return lr


def exec_overrides(m: config_lib.ModelSection) -> dict:
    """The run's execution settings (and rope scaling) laid over a checkpoint's config.json."""
    return dict(dtype=m.dtype, attention_impl=m.attention_impl, remat=m.remat, scan_layers=m.scan_layers,
                logits_chunk=m.logits_chunk, **config_lib.rope_overrides(m))


def model_config(cfg: Config, vocab_size: int | None) -> models.ModelConfig:
    """The config of the model actually trained: the checkpoint's (config.json of
    model.init_from) when set, else the named size; with the run's execution settings."""
    m = cfg.model
    if not m.init_from:
        if m.size == "hf" and paths.is_remote(m.hf_path):  # config.json read from a local copy
            m = dataclasses.replace(m, hf_path=paths.local_copy(m.hf_path))
        return config_lib.build_model_config(m, vocab_size)
    try:
        mcfg = models.read_hf_config(paths.local_copy(m.init_from), **exec_overrides(m))
    except models.CheckpointError:
        raise
    except (ValueError, OSError) as e:
        raise config_lib.ConfigError(f"model.init_from: {e}") from None
    if m.size == "tiny" and vocab_size is not None and mcfg.vocab_size != vocab_size:
        raise config_lib.ConfigError(
            f"model.init_from vocab {mcfg.vocab_size} != tokenizer vocab {vocab_size}")
    return mcfg


def check_paths(cfg: Config, workdir: str | None = None) -> None:
    """Every local path the config names (and the workdir) usable, or a PathError naming the
    field and what is wrong: missing, a symlink loop, permission, a file for a directory."""
    m = cfg.model
    for field, value, want in (("model.init_from", m.init_from, "dir"),
                               ("model.hf_path", m.hf_path if m.size == "hf" else "", "dir"),
                               ("data.tokenizer", cfg.data.tokenizer, "any"),
                               ("rl.ref_from", cfg.rl.ref_from, "dir")):
        if value:
            paths.check_readable(value, field, want)
    for field in ("train_files", "sft_files", "eval_files"):
        if getattr(cfg.data, field):  # each file (or each glob's hits) readable, before any is read
            paths.expand(getattr(cfg.data, field), f"data.{field} file")
    if workdir is None:
        return
    if paths.is_remote(workdir):
        paths.makedirs(workdir)
        return
    problem = paths.local_problem(workdir, "dir")
    if problem and problem != "does not exist":
        raise paths.PathError(f"--workdir {workdir!r} {problem}")
    try:
        paths.makedirs(workdir)
    except OSError as e:
        raise paths.PathError(f"--workdir {workdir!r}: cannot create it ({e.strerror or type(e).__name__})") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise paths.PathError(f"--workdir {workdir!r} is not writable (permission denied)")


def validate_run(cfg: Config, mcfg, mesh) -> None:
    """Everything checkable before compiling: layouts, batch splits, overlong buffer."""
    batch_axes = sharding.batch_axis_size(mesh)
    try:
        sharding.check_layout(models.logical_axes(mcfg), models.param_shapes(mcfg), mesh)
    except ValueError as e:  # a mesh the model does not split over: a config error, one line
        raise config_lib.ConfigError(str(e)) from None
    for ph in cfg.phases:
        if ph.batch % jax.process_count():
            raise config_lib.ConfigError(
                f"phases[{ph.name}].batch={ph.batch} must be divisible by the {jax.process_count()} "
                "processes (each draws an equal share of every batch)")
        if ph.kind != "rl":
            if ph.micro_rows and ph.micro_rows % batch_axes:
                raise config_lib.ConfigError(
                    f"phases[{ph.name}].micro_rows={ph.micro_rows} is not divisible by the mesh batch axes "
                    f"(data*fsdp={batch_axes}); change phases[{ph.name}].micro_rows or mesh")
            continue
        gen_b = cfg.rl.gen_batch or ph.batch
        if gen_b > ph.batch and not cfg.rl.dynamic_sampling:
            raise config_lib.ConfigError(
                f"rl.gen_batch={gen_b} > phases[{ph.name}].batch={ph.batch} with rl.dynamic_sampling=False: every "
                f"group is kept, so {gen_b - ph.batch} of every {gen_b} would be generated and thrown away; set "
                f"rl.gen_batch=0 (the phase batch) or turn rl.dynamic_sampling on")
        if gen_b % jax.process_count():
            raise config_lib.ConfigError(
                f"rl.gen_batch={gen_b} must be divisible by the {jax.process_count()} processes")
        if cfg.rl.rollout_batch and gen_b % cfg.rl.rollout_batch:
            raise config_lib.ConfigError(
                f"prompts per generation round (rl.gen_batch or phases[{ph.name}].batch) = {gen_b} must be "
                f"a multiple of rl.rollout_batch={cfg.rl.rollout_batch}")
        mini = min(cfg.rl.mini_batch, ph.batch)
        micro = cfg.rl.micro_batch or mini
        if ph.batch % mini or mini % micro:
            raise config_lib.ConfigError(
                f"phases[{ph.name}].batch={ph.batch} must split into rl.mini_batch={mini} and "
                f"rl.micro_batch={micro} evenly")
        if micro % batch_axes:
            raise config_lib.ConfigError(
                f"rl.micro_batch={micro} groups is not divisible by the mesh batch axes (data*fsdp="
                f"{batch_axes}); change rl.micro_batch or mesh")
        if cfg.rl.loss_scope == "dynamic" and cfg.rl.token_budget < ph.max_input + ph.max_output:
            raise config_lib.ConfigError(
                f"rl.token_budget={cfg.rl.token_budget} is below the longest sequence of phases[{ph.name}] "
                f"(max_input + max_output = {ph.max_input + ph.max_output}): a micro-batch must hold one")
        if cfg.rl.overlong_buffer >= ph.max_output:
            raise config_lib.ConfigError(
                f"rl.overlong_buffer={cfg.rl.overlong_buffer} must be < phases[{ph.name}].max_output="
                f"{ph.max_output}")
