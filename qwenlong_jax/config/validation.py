"""The checks a run's config gets before anything is read or compiled, beyond each section's own
(schema.py): every path it names, and what only the model, the mesh and the step shapes tell.

    check_paths(cfg, workdir)                  every local path readable, the workdir writable
    validate_run(cfg, mcfg, mesh, shapes)      layouts, batch splits, token budget, overlong buffer

run/spec.py calls validate_run once, with the shapes it worked out for every phase; each failure
is one ConfigError line naming the field.
"""

from __future__ import annotations

import os

import jax

from qwenlong_jax import models, paths
from qwenlong_jax.config.load import ConfigError
from qwenlong_jax.config.schema import Config, PhaseKind
from qwenlong_jax.parallel import sharding


def check_paths(cfg: Config, workdir: str | None = None) -> None:
    """Every local path the config names (and the workdir) usable, or a PathError naming the
    field and what is wrong: missing, a symlink loop, permission, a file for a directory."""
    m = cfg.model
    for field, value, want in (
        ("model.init_from", m.init_from, "dir"),
        ("model.hf_path", m.hf_path if m.size == "hf" else "", "dir"),
        ("data.tokenizer", cfg.data.tokenizer, "any"),
        ("rl.ref_from", cfg.rl.ref_from, "dir"),
    ):
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


def validate_run(cfg: Config, mcfg, mesh, shapes: dict) -> None:
    """Everything checkable before compiling: the model's layout on the mesh, and each phase's
    batch splits (`shapes`: phase name -> its step shapes, run/step_shapes.py)."""
    batch_axes = sharding.batch_axis_size(mesh)
    try:
        sharding.check_layout(models.logical_axes(mcfg), models.param_shapes(mcfg), mesh)
    except ValueError as e:  # a mesh the model does not split over: a config error, one line
        raise ConfigError(str(e)) from None
    rl, procs = cfg.rl, jax.process_count()
    for ph in cfg.phases:
        if ph.batch % procs:
            raise ConfigError(
                f"phases[{ph.name}].batch={ph.batch} must be divisible by the {procs} processes "
                "(each draws an equal share of every batch)"
            )
        if ph.kind != PhaseKind.RL:
            if ph.micro_rows and ph.micro_rows % batch_axes:
                raise ConfigError(
                    f"phases[{ph.name}].micro_rows={ph.micro_rows} is not divisible by the mesh batch axes "
                    f"(data*fsdp={batch_axes}); change phases[{ph.name}].micro_rows or mesh"
                )
            continue
        s = shapes[ph.name]
        if s.gen_B > s.B and not rl.dynamic_sampling:
            raise ConfigError(
                f"rl.gen_batch={s.gen_B} > phases[{ph.name}].batch={s.B} with rl.dynamic_sampling=False: every "
                f"group is kept, so {s.gen_B - s.B} of every {s.gen_B} would be generated and thrown away; set "
                f"rl.gen_batch=0 (the phase batch) or turn rl.dynamic_sampling on"
            )
        if s.gen_B % procs:
            raise ConfigError(f"rl.gen_batch={s.gen_B} must be divisible by the {procs} processes")
        if s.gen_B % s.sample_B:
            raise ConfigError(
                f"prompts per generation round (rl.gen_batch or phases[{ph.name}].batch) = {s.gen_B} must be "
                f"a multiple of rl.rollout_batch={rl.rollout_batch}"
            )
        if s.updates * s.micro * s.rows != s.B:
            raise ConfigError(
                f"phases[{ph.name}].batch={ph.batch} must split into rl.mini_batch={rl.mini_batch} (at most the "
                f"batch) and rl.micro_batch={rl.micro_batch or 'the mini-batch'} evenly"
            )
        if s.rows % batch_axes:
            raise ConfigError(
                f"rl.micro_batch={s.rows} groups is not divisible by the mesh batch axes (data*fsdp="
                f"{batch_axes}); change rl.micro_batch or mesh"
            )
        if rl.loss_scope == "dynamic" and rl.token_budget < ph.max_input + ph.max_output:
            raise ConfigError(
                f"rl.token_budget={rl.token_budget} is below the longest sequence of phases[{ph.name}] "
                f"(max_input + max_output = {ph.max_input + ph.max_output}): a micro-batch must hold one"
            )
        if rl.overlong_buffer >= ph.max_output:
            raise ConfigError(
                f"rl.overlong_buffer={rl.overlong_buffer} must be < phases[{ph.name}].max_output={ph.max_output}"
            )
