"""Ahead-of-time compile check: every jitted step of a run, compiled for a TPU topology.

    python -m qwenlong_jax.compile --config configs/r1_distill_32b_tpu.py [--topology v5p:4x4x4]
        [--config.a.b=value ...] [--phases rl_20k,rl_60k] [--functions update] [--json FILE]

For every phase of the config it builds the functions the run jits, with the run's own code
(qwenlong_jax/step_fns.py, the sampler, step_shapes.py) and shardings, on abstract
inputs (jax.ShapeDtypeStruct: nothing the size of the model is allocated), and compiles each
with the real XLA:TPU compiler (Mosaic for the Pallas kernels) for libtpu's compile-only
devices; no TPU is needed. Functions per phase:

    sft     update        the SFT step (worst case: one example per packed row)
    rl      old_logp      the policy-logprob pass before the update
            update        the GRPO update (mini-batches x micro-batches)
            sample        sampler.sample_groups: prefill at the phase's prompt bucket, decode
                          G x max_output tokens, rl.rollout_batch prompts per call
    eval@L  generate      held-out greedy generation for each data.eval_lengths L

Per function: compiled or the compiler's error (one line); per-chip argument, temporary and
total bytes (argument + output + temporary - aliased, from `compiled.memory_analysis()`), plus
the optimizer state that stays resident while the sampler or the logprob pass runs; FLOPs per
chip as `cost_analysis()` reports them (a loop body -- layer scan, micro-batches, decode steps
-- counted once, not times its trip count); compile seconds; the memory planner's estimate (plan.py) beside
the compiler's figure; and `est.`, a step-time ESTIMATE (a roofline read from the compiled HLO
with loop trip counts multiplied out, qwenlong_jax/roofline.py: not a measurement) with the
bound that dominates, plus per RL phase the estimated RL step (sampler calls + old_logp + update). Exit 0 only when everything compiles and fits the chip's HBM; else a
one-line `error:` naming the phase, the function and the knob to change.

Default topology: v5p with as many chips as the config's mesh (64 -> v5p:4x4x4), or the
smallest v5p slice (4 chips) when the mesh takes all devices (mesh.data=-1). The mesh must
use every chip of the topology. The run's mesh is built from the
topology's devices exactly as the trainer builds it (sharding.make_mesh).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Sequence

from absl import flags

from qwenlong_jax.compile_jobs import Job, build_jobs

GIB = 2**30
V5P_SLICES = {4: "v5p:2x2x1", 8: "v5p:2x2x2", 16: "v5p:2x2x4", 32: "v5p:2x4x4", 64: "v5p:4x4x4",
              128: "v5p:4x4x8", 256: "v5p:4x8x8", 512: "v5p:8x8x8"}


@dataclasses.dataclass
class FnResult:
    phase: str
    fn: str
    shape: str
    ok: bool = False
    error: str = ""
    argument_bytes: int = 0
    output_bytes: int = 0
    alias_bytes: int = 0
    temp_bytes: int = 0
    resident_bytes: int = 0  # optimizer state held in HBM while this function runs (not an arg)
    flops: float = 0.0
    compile_s: float = 0.0
    mosaic_kernels: int = 0
    plan_bytes: int | None = None
    hbm_bytes: int = 0
    knob: str = ""
    est: dict | None = None  # roofline.summary(): estimated seconds and bound (not measured)

    @property
    def total_bytes(self) -> int:
        return (self.argument_bytes + self.output_bytes + self.temp_bytes - self.alias_bytes
                + self.resident_bytes)

    @property
    def fits(self) -> bool:
        return self.ok and self.total_bytes <= self.hbm_bytes

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(total_bytes=self.total_bytes, fits=self.fits)
        return d


def default_topology(cfg) -> str:
    sizes = cfg.mesh.sizes()
    chips = 4 if -1 in sizes else math.prod(sizes)
    if chips not in V5P_SLICES:
        raise ValueError(f"a mesh of {chips} chips is no v5p slice ({', '.join(map(str, V5P_SLICES))}"
                         " chips); pass --topology and --config.mesh.* to match")
    return V5P_SLICES[chips]


def _one_line(e: BaseException) -> str:
    """The compiler's message in one line: the first line that says what went wrong."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if any(w in ln for w in ("Ran out of memory", "RESOURCE_EXHAUSTED", "vmem", "error",
                                 "Error", "INTERNAL", "INVALID")):
            return f"{type(e).__name__}: {ln}"[:400]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:400]


def compile_job(job: Job, mesh, hbm: int, chip=None) -> FnResult:
    import jax

    from qwenlong_jax import tpu_topology

    res = FnResult(job.phase, job.fn, job.shape, resident_bytes=job.resident_bytes,
                   plan_bytes=job.plan_bytes, hbm_bytes=hbm, knob=job.knob)
    t0 = time.time()
    try:
        fn, args, kw = job.build()
        with jax.set_mesh(mesh):
            compiled = fn.trace(*args, **kw).lower().compile()
    except Exception as e:  # the compiler's verdict, one line
        res.error, res.compile_s = _one_line(e), time.time() - t0
        return res
    res.compile_s = time.time() - t0
    res.ok = True
    mem = compiled.memory_analysis()
    res.argument_bytes, res.output_bytes = mem.argument_size_in_bytes, mem.output_size_in_bytes
    res.alias_bytes, res.temp_bytes = mem.alias_size_in_bytes, mem.temp_size_in_bytes
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    res.flops = float((cost or {}).get("flops", 0.0))
    res.mosaic_kernels = tpu_topology.mosaic_kernel_count(compiled)
    if chip is not None:
        from qwenlong_jax import roofline
        res.est = roofline.summary(compiled.as_text(), chip)
    return res


def _gib(n: int | None) -> str:
    """Bytes as GiB with one decimal ("12.3G"), or MiB below 1 GiB ("45.6M")."""
    if n is None:
        return "-"
    return f"{n / GIB:.1f}G" if abs(n) >= GIB else f"{n / 2**20:.1f}M"


def _est(r: FnResult) -> str:
    return "-" if not r.est else f"{r.est['seconds']:.3g}s {r.est['bound']}"


def format_table(results: Sequence[FnResult]) -> str:
    head = (f"{'phase':<9} {'function':<9} {'status':<7} {'args':>7} {'temp':>7} {'resid':>6} "
            f"{'total':>7} {'HBM':>6} {'plan':>7} {'plan/c':>6} {'TFLOP':>8} {'Mosaic':>6} "
            f"{'compile':>8} {'est.':>13}  shape")
    lines = [head, "(bytes per chip; total = args + outputs + temp - aliased + resident optimizer "
             "state; plan/c = planner / compiler total; est. = roofline ESTIMATE of one call, "
             "not a measurement: qwenlong_jax/roofline.py)"]
    for r in results:
        status = "OK" if r.fits else ("no fit" if r.ok else "FAILED")
        ratio = (f"{r.plan_bytes / r.total_bytes:.2f}" if r.ok and r.plan_bytes and r.total_bytes
                 else "-")
        lines.append(
            f"{r.phase:<9} {r.fn:<9} {status:<7} {_gib(r.argument_bytes):>7} "
            f"{_gib(r.temp_bytes):>7} {_gib(r.resident_bytes):>6} {_gib(r.total_bytes):>7} "
            f"{_gib(r.hbm_bytes):>6} {_gib(r.plan_bytes):>7} {ratio:>6} "
            f"{r.flops / 1e12:>8.1f} {r.mosaic_kernels:>6} {r.compile_s:>7.0f}s "
            f"{_est(r):>13}  {r.shape}")
        if not r.ok:
            lines.append(f"          {r.error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from qwenlong_jax import config_cli
    fv, config = config_cli.new_flags(argv)
    topology_flag = flags.DEFINE_string("topology", "", "TPU topology, e.g. v5p:4x4x4 (default: the "
                                        "config mesh's chip count on v5p)", flag_values=fv)
    phases_flag = flags.DEFINE_string("phases", "", "comma-separated phase names (default: all)",
                                      flag_values=fv)
    functions_flag = flags.DEFINE_string("functions", "", "comma-separated function names (update, "
                                         "old_logp, sample, generate; default: all)", flag_values=fv)
    json_flag = flags.DEFINE_string("json", "", "also write the results to this file", flag_values=fv)
    overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]

    from qwenlong_jax import tpu_topology
    if not tpu_topology.libtpu_available():
        print(f"error: {tpu_topology.INSTALL}", file=sys.stderr)
        return 1
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

    from qwenlong_jax import plan, roofline, sharding
    from qwenlong_jax.config import ConfigError

    try:
        cfg = config_cli.parse(fv, config, argv)
        spec = fv["config"].config_filename
        topology = topology_flag.value or default_topology(cfg)
        hbm = tpu_topology.hbm_bytes(topology)
        devices = tpu_topology.topology_devices(topology)
        try:
            mesh = sharding.make_mesh(cfg.mesh, devices)
        except (ValueError, AssertionError) as e:
            raise ConfigError(f"mesh {cfg.mesh} on {topology} ({len(devices)} chips): {e}; set "
                              "--config.mesh.* to use every chip, or pass --topology") from None
        phases = [p for p in phases_flag.value.split(",") if p]
        unknown = set(phases) - {p.name for p in cfg.phases}
        if unknown:
            raise ConfigError(f"--phases: no phase named {', '.join(sorted(unknown))}")
        from qwenlong_jax.run_setup import validate_run  # the trainer's own pre-compile checks
        validate_run(cfg, plan.model_config(cfg), mesh)
        jobs = build_jobs(cfg, mesh, phases)
        if functions_flag.value:
            jobs = [j for j in jobs if j.fn in functions_flag.value.split(",")]
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{spec} on {topology} ({len(devices)} chips, {hbm / GIB:.1f} GiB HBM each), "
          f"mesh {dict(mesh.shape)}: compiling {len(jobs)} functions", flush=True)
    results = []
    for job in jobs:
        r = compile_job(job, mesh, hbm, roofline.chip_for(topology))
        results.append(r)
        status = "OK" if r.fits else ("does not fit" if r.ok else "FAILED")
        print(f"  {r.phase} {r.fn}: {status} ({_gib(r.total_bytes)}, {r.compile_s:.0f}s)"
              + (f" {r.error}" if r.error else ""), flush=True)
    print(format_table(results))
    print(roofline.format_rl_steps(cfg, results))
    if json_flag.value:
        with open(json_flag.value, "w") as f:
            json.dump({"config": spec, "overrides": overrides,
                       "topology": topology, "hbm_bytes": hbm,
                       "mesh": dict(mesh.shape), "results": [r.as_dict() for r in results]},
                      f, indent=1)
    bad = [r for r in results if not r.fits]
    if bad:
        r = bad[0]
        oom = not r.ok and ("memory" in r.error or "RESOURCE_EXHAUSTED" in r.error)
        why = (r.error if not r.ok else
               f"needs {r.total_bytes / GIB:.1f} GiB of {r.hbm_bytes / GIB:.1f} GiB per chip")
        knob = f"; change {r.knob}" if r.ok or oom else ""
        print(f"error: phase {r.phase}, {r.fn}: {why}{knob}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
