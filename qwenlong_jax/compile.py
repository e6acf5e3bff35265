"""Ahead-of-time compile check: every jitted step of a run, compiled for a TPU slice or GPU nodes.

    python -m qwenlong_jax.compile --config configs/r1_distill_32b_tpu.py [--target v5p:4x4x4]
    python -m qwenlong_jax.compile --config configs/r1_distill_32b_gpu.py [--target h100:16x8]
        [--config.a.b=value ...] [--phases rl_20k,rl_60k] [--functions update] [--json FILE]

For every phase of the config it builds the functions the run jits, with the run's own code
(qwenlong_jax/step_fns.py, the sampler, step_shapes.py) and shardings, on abstract
inputs (jax.ShapeDtypeStruct: nothing the size of the model is allocated), and compiles each
with the real compiler of the target -- XLA:TPU (Mosaic for the Pallas kernels) for libtpu's
compile-only TPU devices, or XLA:GPU (Triton for the Pallas kernels, ptxas for sm_90a) for the
CUDA plugin's compile-only GPUs (qwenlong_jax/targets.py); neither a TPU nor a GPU is needed.
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
or Triton custom calls); compile seconds; and the memory planner's estimate (plan.py) beside the
compiler's figure; and `est.`, a step-time ESTIMATE (a roofline read from the compiled HLO
with loop trip counts multiplied out, qwenlong_jax/roofline.py: not a measurement) with the
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

import dataclasses
import math
import time

from qwenlong_jax.compile_jobs import Job

GIB = 2**30


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
    flops: float | None = None  # None: the backend gives no cost analysis (XLA:GPU compile-only)
    compile_s: float = 0.0
    pallas_kernels: int = 0  # Mosaic (TPU) or Triton (GPU) custom calls
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


def default_target(cfg, spec: str) -> str:
    """The config file's COMPILE_TARGET (a plain path, no :arg), else the v5p slice of its mesh."""
    from qwenlong_jax import targets
    from qwenlong_jax.cli.flags import config_target
    named = config_target(spec)
    if named:
        return named
    sizes = cfg.mesh.sizes()
    return targets.default_target(4 if -1 in sizes else math.prod(sizes))


def _one_line(e: BaseException) -> str:
    """The compiler's message in one line: the first line that says what went wrong."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if any(w in ln for w in ("Ran out of memory", "RESOURCE_EXHAUSTED", "vmem", "error",
                                 "Error", "INTERNAL", "INVALID")):
            return f"{type(e).__name__}: {ln}"[:400]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:400]


def compile_job(job: Job, mesh, hbm: int, kind: str = "tpu", chip=None) -> FnResult:
    import jax

    from qwenlong_jax import targets

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
    res.flops = float(cost["flops"]) if cost and "flops" in cost else None
    res.pallas_kernels = targets.kernel_count(compiled, kind)
    if chip is not None:
        from qwenlong_jax import roofline
        res.est = roofline.summary(compiled.as_text(), chip)
    return res


if __name__ == "__main__":  # `python -m qwenlong_jax.compile`: the command line is qwenlong_jax/cli/compile.py
    import importlib  # by name: that module imports this one (as a library, not as __main__)
    cli = importlib.import_module("qwenlong_jax.cli.compile")
    cli.flags.run(cli.main)
