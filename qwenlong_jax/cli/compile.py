"""python -m qwenlong_jax.compile --config configs/x.py[:arg] [--config.a.b=value ...] [--target T]
    [--phases rl_20k,rl_60k] [--functions update] [--json FILE]

Ahead-of-time compile check: every jitted step of a run compiled for a TPU slice or GPU nodes
with the target's real compiler, on compile-only devices (no TPU or GPU needed; see
qwenlong_jax/compile.py for what is compiled and measured).

    python -m qwenlong_jax.compile --config configs/r1_distill_32b_tpu.py [--target v5p:4x4x4]
    python -m qwenlong_jax.compile --config configs/r1_distill_32b_gpu.py [--target h100:16x8]

Target (--target, alias --topology): a libtpu topology ("v5p:4x4x4") or GPU nodes ("h100:16x8" =
16 nodes x 8 GPUs, "h200:8x8"). Default: the config file's COMPILE_TARGET when it names one, else
v5p with as many chips as the config's mesh, or the smallest v5p slice (4 chips) when the mesh
takes all devices (mesh.data=-1). Prints one line per function as it compiles, then the table.
Exit status 0 only when everything compiles and fits the device's memory; 2 with a one-line
`error:` naming the phase, the function and the knob to change; 1 on bad input.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from absl import flags as absl_flags

from qwenlong_jax.cli import flags

GIB = 2**30


def _gib(n: int | None) -> str:
    """Bytes as GiB with one decimal ("12.3G"), or MiB below 1 GiB ("45.6M")."""
    if n is None:
        return "-"
    return f"{n / GIB:.1f}G" if abs(n) >= GIB else f"{n / 2**20:.1f}M"


def _tflop(flops: float | None) -> str:
    return "-" if flops is None else f"{flops / 1e12:.1f}"


def _est(r) -> str:
    return "-" if not r.est else f"{r.est['seconds']:.3g}s {r.est['bound']}"


def format_table(results: Sequence, kernel_name: str = "Mosaic") -> str:
    """compile.FnResult per compiled function as a table."""
    head = (f"{'phase':<9} {'function':<9} {'status':<7} {'args':>7} {'temp':>7} {'resid':>6} "
            f"{'total':>7} {'HBM':>6} {'plan':>7} {'plan/c':>6} {'TFLOP':>8} {kernel_name:>6} "
            f"{'compile':>8} {'est.':>13}  shape")
    lines = [head, "(bytes per device; total = args + outputs + temp - aliased + resident "
             "optimizer state; HBM = what a run may allocate; plan/c = planner / compiler total; "
             "est. = roofline ESTIMATE of one call, not a measurement: qwenlong_jax/roofline.py)"]
    for r in results:
        status = "OK" if r.fits else ("no fit" if r.ok else "FAILED")
        ratio = (f"{r.plan_bytes / r.total_bytes:.2f}" if r.ok and r.plan_bytes and r.total_bytes
                 else "-")
        lines.append(
            f"{r.phase:<9} {r.fn:<9} {status:<7} {_gib(r.argument_bytes):>7} "
            f"{_gib(r.temp_bytes):>7} {_gib(r.resident_bytes):>6} {_gib(r.total_bytes):>7} "
            f"{_gib(r.hbm_bytes):>6} {_gib(r.plan_bytes):>7} {ratio:>6} "
            f"{_tflop(r.flops):>8} {r.pallas_kernels:>6} {r.compile_s:>7.0f}s "
            f"{_est(r):>13}  {r.shape}")
        if not r.ok:
            lines.append(f"          {r.error}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    cmd = flags.Command(__name__, __doc__, argv, config="")
    absl_flags.DEFINE_string(
        "target", "", "compile target: a TPU topology (v5p:4x4x4) or GPU nodes x GPUs per node "
        "(h100:16x8, h200:8x8); default: the config's COMPILE_TARGET, else the config mesh's chip "
        "count on v5p", flag_values=cmd.fv)
    absl_flags.DEFINE_alias("topology", "target", flag_values=cmd.fv)
    absl_flags.DEFINE_string("phases", "", "comma-separated phase names (default: all)", flag_values=cmd.fv)
    absl_flags.DEFINE_string("functions", "", "comma-separated function names (update, old_logp, sample, "
                             "generate; default: all)", flag_values=cmd.fv)
    absl_flags.DEFINE_string("json", "", "also write the results to this file", flag_values=cmd.fv)
    overrides = [a[len("--config."):] for a in cmd.argv if a.startswith("--config.")]
    try:
        args = cmd.parse()
    except flags.FlagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    import jax
    from jax._src import xla_bridge
    if not xla_bridge.backends_are_initialized():
        jax.config.update("jax_platforms", "cpu")  # compile-only devices; no accelerator backend
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

    from qwenlong_jax import plan, roofline, sharding, targets
    from qwenlong_jax.compile import compile_job, default_target
    from qwenlong_jax.compile_jobs import build_jobs
    from qwenlong_jax.config import ConfigError

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
            raise ConfigError(f"mesh {cfg.mesh} on {target.name} ({len(devices)} devices): {e}; set "
                              "--config.mesh.* to use every device, or pass --target") from None
        phases = [p for p in args.phases.split(",") if p]
        unknown = set(phases) - {p.name for p in cfg.phases}
        if unknown:
            raise ConfigError(f"--phases: no phase named {', '.join(sorted(unknown))}")
        from qwenlong_jax.run_setup import validate_run  # the trainer's own pre-compile checks
        validate_run(cfg, plan.model_config(cfg), mesh)
        jobs = build_jobs(cfg, mesh, phases)
        if args.functions:
            jobs = [j for j in jobs if j.fn in args.functions.split(",")]
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    hbm = target.memory_bytes
    share = ("" if target.kind == "tpu" else
             f" of {target.device_memory_bytes / GIB:.1f} (jax's GPU client share; no autotuning "
             "without a GPU: untuned program)")
    print(f"{spec} on {target.name} ({len(devices)} {target.chip}, {hbm / GIB:.1f} GiB each{share}), "
          f"mesh {dict(mesh.shape)}: compiling {len(jobs)} functions", flush=True)
    results = []
    for job in jobs:
        r = compile_job(job, mesh, hbm, target.kind, roofline.chip_for(target.name))
        results.append(r)
        status = "OK" if r.fits else ("does not fit" if r.ok else "FAILED")
        print(f"  {r.phase} {r.fn}: {status} ({_gib(r.total_bytes)}, {r.compile_s:.0f}s)"
              + (f" {r.error}" if r.error else ""), flush=True)
    print(format_table(results, target.kernel_name))
    print(roofline.format_rl_steps(cfg, results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": spec, "overrides": overrides,
                       "topology": target.name, "kind": target.kind, "hbm_bytes": hbm,
                       "device_memory_bytes": target.device_memory_bytes,
                       "mesh": dict(mesh.shape), "results": [r.as_dict() for r in results]},
                      f, indent=1)
    bad = [r for r in results if not r.fits]
    if bad:
        r = bad[0]
        oom = not r.ok and ("memory" in r.error or "RESOURCE_EXHAUSTED" in r.error)
        why = (r.error if not r.ok else
               f"needs {r.total_bytes / GIB:.1f} GiB of {r.hbm_bytes / GIB:.1f} GiB per device")
        knob = f"; change {r.knob}" if r.ok or oom else ""
        print(f"error: phase {r.phase}, {r.fn}: {why}{knob}", file=sys.stderr)
        return 2
    return 0

