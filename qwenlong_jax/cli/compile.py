"""python -m qwenlong_jax.compile --config configs/x.py[:arg] [--config.a.b=value ...] [--target T]
    [--phases rl_20k,rl_60k] [--functions update] [--json FILE]

Ahead-of-time compile check: every jitted step of a run, compiled for a TPU slice or GPU nodes.

    python -m qwenlong_jax.compile --config configs/r1_distill_32b_tpu.py [--target v5p:4x4x4]
    python -m qwenlong_jax.compile --config configs/r1_distill_32b_gpu.py [--target h100:16x8]
        [--config.a.b=value ...] [--phases rl_20k,rl_60k] [--functions update] [--json FILE]

For every phase of the config it builds the functions the run jits, with the run's own code
(qwenlong_jax/run/step_fns.py, the sampler, step_shapes.py) and shardings, on abstract
inputs (jax.ShapeDtypeStruct: nothing the size of the model is allocated), and compiles each
with the real compiler of the target -- XLA:TPU (Mosaic for the Pallas kernels) for libtpu's
compile-only TPU devices, or XLA:GPU (Triton for the Pallas kernels, ptxas for sm_90a) for the
CUDA plugin's compile-only GPUs (qwenlong_jax/capacity/targets.py); neither a TPU nor a GPU is needed.
Functions per phase:

    sft     update        the SFT step (worst case: one example per packed row)
    rl      old_logp      the policy-logprob pass before the update
            update        the GRPO update (mini-batches x micro-batches)
            sample        sampler.sample_groups: prefill at the phase's prompt bucket, decode
                          G x max_output tokens, rl.rollout_batch prompts per call
    eval@L  generate      held-out greedy generation for each data.eval_lengths L

Per function: compiled or the compiler's error (one line); per-device argument, temporary and
total bytes (argument + output + temporary - aliased, from `compiled.memory_analysis()`), plus
the optimizer state that stays resident while the sampler or the logprob pass runs; FLOPs per
device as `cost_analysis()` reports them (a loop body -- layer scan, micro-batches, decode steps
-- counted once, not times its trip count); the Pallas kernels in the compiled program (Mosaic
or Triton custom calls); compile seconds; and the memory planner's estimate (capacity/planner.py) beside the
compiler's figure; and `est.`, a step-time ESTIMATE (a roofline read from the compiled HLO
with loop trip counts multiplied out, qwenlong_jax/capacity/roofline.py: not a measurement) with the
bound that dominates, plus per RL phase the estimated RL step (sampler calls + old_logp +
update). Exit 0 only when everything compiles and fits the device's memory
(`targets.Target.memory_bytes`: a TPU chip's HBM; on a GPU the share jax's client allocates,
75% by default); else a one-line `error:` naming the phase, the function and the knob to change.
Without a GPU nothing is autotuned: GPU figures are those of the untuned program.

Target (--target, alias --topology): a libtpu topology ("v5p:4x4x4") or GPU nodes
("h100:16x8" = 16 nodes x 8 GPUs, "h200:8x8"). Default: the config file's COMPILE_TARGET when it
names one (configs/r1_distill_32b_gpu.py: h100:16x8), else v5p with as many chips as the config's
mesh (64 -> v5p:4x4x4), or the smallest v5p slice (4 chips) when the mesh takes all devices
(mesh.data=-1). The mesh must use every device of the target. The run's mesh is built from the
target's devices exactly as the trainer builds it (sharding.make_mesh).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from absl import flags as absl_flags

from qwenlong_jax.cli import config_files, flags


def default_target(cfg, spec: str) -> str:
    """The config file's COMPILE_TARGET (a plain path, no :arg), else the v5p slice of its mesh."""
    import math

    from qwenlong_jax.capacity import targets

    named = config_files.config_target(spec)
    if named:
        return named
    sizes = cfg.mesh.sizes()
    return targets.default_target(4 if -1 in sizes else math.prod(sizes))


def main(argv: Sequence[str] | None = None) -> int:
    cmd = flags.Command(__name__, __doc__, argv, config="")
    absl_flags.DEFINE_string(
        "target",
        "",
        "compile target: a TPU topology (v5p:4x4x4) or GPU nodes x GPUs per node "
        "(h100:16x8, h200:8x8); default: the config's COMPILE_TARGET, else the config mesh's chip "
        "count on v5p",
        flag_values=cmd.fv,
    )
    absl_flags.DEFINE_alias("topology", "target", flag_values=cmd.fv)
    absl_flags.DEFINE_string("phases", "", "comma-separated phase names (default: all)", flag_values=cmd.fv)
    absl_flags.DEFINE_string(
        "functions",
        "",
        "comma-separated function names (update, old_logp, sample, generate; default: all)",
        flag_values=cmd.fv,
    )
    absl_flags.DEFINE_string("json", "", "also write the results to this file", flag_values=cmd.fv)
    overrides = [a[len("--config.") :] for a in cmd.argv if a.startswith("--config.")]
    try:
        args = cmd.parse()
    except flags.FlagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    import jax
    from jax._src import xla_bridge

    if not xla_bridge.backends_are_initialized():
        jax.config.update("jax_platforms", "cpu")  # compile-only devices; no accelerator backend
        # A compile-only executable cannot be loaded back: a persistent cache (JAX_COMPILATION_CACHE_DIR)
        # would only store entries that fail to read, with a warning each.
        jax.config.update("jax_enable_compilation_cache", False)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

    from qwenlong_jax.capacity import chips, roofline, targets
    from qwenlong_jax.capacity.compile_check import GIB, compile_job, format_table, gib
    from qwenlong_jax.capacity.compile_jobs import build_jobs
    from qwenlong_jax.config import ConfigError
    from qwenlong_jax.parallel import sharding
    from qwenlong_jax.run.spec import RunSpec

    try:
        cfg = cmd.config()
        spec = cmd.config_filename
        target = targets.parse(args.target or default_target(cfg, spec))
        if not target.available():
            print(f"error: {target.install}", file=sys.stderr)
            return 1
        devices = target.devices()
        try:
            mesh = sharding.make_mesh(cfg.mesh, devices)
        except (ValueError, AssertionError) as e:
            raise ConfigError(
                f"mesh {cfg.mesh} on {target.name} ({len(devices)} devices): {e}; set "
                "--config.mesh.* to use every device, or pass --target"
            ) from None
        phases = [p for p in args.phases.split(",") if p]
        unknown = set(phases) - {p.name for p in cfg.phases}
        if unknown:
            raise ConfigError(f"--phases: no phase named {', '.join(sorted(unknown))}")
        run = RunSpec.build(cfg, mesh)  # validated with the trainer's own pre-compile checks
        jobs = build_jobs(run, phases)
        if args.functions:
            jobs = [j for j in jobs if j.fn in args.functions.split(",")]
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    hbm = target.memory_bytes
    share = (
        ""
        if target.kind == "tpu"
        else f" of {target.device_memory_bytes / GIB:.1f} (jax's GPU client share; no autotuning "
        "without a GPU: untuned program)"
    )
    print(
        f"{spec} on {target.name} ({len(devices)} {target.chip}, {hbm / GIB:.1f} GiB each{share}), "
        f"mesh {dict(mesh.shape)}: compiling {len(jobs)} functions",
        flush=True,
    )
    results = []
    for job in jobs:
        r = compile_job(job, mesh, hbm, target.kind, chips.chip_for(target.name))
        results.append(r)
        status = "OK" if r.fits else ("does not fit" if r.ok else "FAILED")
        print(
            f"  {r.phase} {r.fn}: {status} ({gib(r.total_bytes)}, {r.compile_s:.0f}s)"
            + (f" {r.error}" if r.error else ""),
            flush=True,
        )
    print(format_table(results, target.kernel_name))
    print(roofline.format_rl_steps(run, results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "config": spec,
                    "overrides": overrides,
                    "topology": target.name,
                    "kind": target.kind,
                    "hbm_bytes": hbm,
                    "device_memory_bytes": target.device_memory_bytes,
                    "mesh": dict(mesh.shape),
                    "results": [r.as_dict() for r in results],
                },
                f,
                indent=1,
            )
    bad = [r for r in results if not r.fits]
    if bad:
        r = bad[0]
        oom = not r.ok and ("memory" in r.error or "RESOURCE_EXHAUSTED" in r.error)
        why = r.error if not r.ok else f"needs {r.total_bytes / GIB:.1f} GiB of {r.hbm_bytes / GIB:.1f} GiB per device"
        knob = f"; change {r.knob}" if r.ok or oom else ""
        print(f"error: phase {r.phase}, {r.fn}: {why}{knob}", file=sys.stderr)
        return 2
    return 0
