"""Ahead-of-time compile check: every jitted step of a run, compiled for a TPU topology.

    python -m qwenlong_jax.compile --config configs/r1_distill_32b_tpu.py [--topology v5p:4x4x4]
        [--config.a.b=value ...] [--phases rl_20k,rl_60k] [--functions update] [--json FILE]

For every phase of the config it builds the functions the run jits, with the run's own code
(qwenlong_jax/step_fns.py, the sampler, rollout.rl_step_shapes) and shardings, on abstract
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
-- counted once, not times its trip count); compile seconds; and the memory planner's estimate (plan.py) beside
the compiler's figure. Exit 0 only when everything compiles and fits the chip's HBM; else a
one-line `error:` naming the phase, the function and the knob to change.

Default topology: v5p with as many chips as the config's mesh (64 -> v5p:4x4x4), or the
smallest v5p slice (4 chips) when the mesh takes all devices (mesh.data=-1). The mesh must
use every chip of the topology. The run's mesh is built from the
topology's devices exactly as the trainer builds it (sharding.make_mesh).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Sequence

GIB = 2**30
V5P_SLICES = {4: "v5p:2x2x1", 8: "v5p:2x2x2", 16: "v5p:2x2x4", 32: "v5p:2x4x4", 64: "v5p:4x4x4",
              128: "v5p:4x4x8", 256: "v5p:4x8x8", 512: "v5p:8x8x8"}
# Placeholder end-of-sequence id for the sampler (the tokenizer is not needed to compile: the
# eos set only changes a comparison, not a shape).
EOS_PLACEHOLDER = (1,)


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


@dataclasses.dataclass
class Job:
    phase: str
    fn: str
    shape: str
    build: Callable[[], Any]  # -> (jitted function, abstract args, static kwargs)
    resident_bytes: int
    plan_bytes: int | None
    knob: str


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


def _per_chip_bytes(tree, shardings) -> int:
    import jax
    import numpy as np

    total = 0
    for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
        total += int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
    return total


def _abstract(tree, shardings):
    import jax
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                        shardings)


def build_jobs(cfg, mesh, only_phases: Sequence[str] = ()) -> list[Job]:
    """Every jitted function of the run for `cfg` on `mesh` (TPU compile-only devices)."""
    import jax
    import jax.numpy as jnp

    from qwenlong_jax import models, plan, sharding, step_fns
    from qwenlong_jax.rl import grpo_step
    from qwenlong_jax.rollout import PREFILL_CHUNK, rl_step_shapes
    from qwenlong_jax.sampling import sampler, strategies
    from qwenlong_jax.train_state import TrainState, make_optimizer

    mcfg = plan.model_config(cfg)
    tx = make_optimizer(cfg.optim)
    p_shard = sharding.param_shardings(models.logical_axes(mcfg), models.param_shapes(mcfg), mesh)
    params = _abstract(models.param_shapes(mcfg), p_shard)
    abstract_state = jax.eval_shape(lambda p: TrainState.create(p, tx), params)
    if cfg.rl.kl_coef and any(ph.kind == "rl" for ph in cfg.phases):  # the frozen KL reference
        abstract_state = abstract_state.replace(ref_params=abstract_state.params)
    state_sharding = step_fns.state_shardings(abstract_state, p_shard, mesh)
    state = _abstract(abstract_state, state_sharding)
    opt_bytes = _per_chip_bytes(state.opt_state, state_sharding.opt_state)
    estimates = {pm.phase: pm for pm in plan.estimate(cfg, mesh.size, mcfg)}
    batch_axes = sharding.batch_axis_size(mesh)
    jobs: list[Job] = []

    def arr(shape, dtype, s):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=s)

    for ph in cfg.phases:
        if only_phases and ph.name not in only_phases:
            continue
        pm = estimates[ph.name]
        if ph.kind == "sft":
            s = plan.sft_shapes(cfg, ph, batch_axes)
            U, rows, W = s["micro"], s["rows"], s["W"]
            sh = step_fns.rows_sharding(mesh, 1, 1)
            batch = {k: arr((U, rows, W), jnp.float32 if k == "loss_mask_BW" else jnp.int32, sh)
                     for k in step_fns.SFT_KEYS}
            fn = step_fns.sft_update_fn(mcfg, tx, mesh, state_sharding)
            jobs.append(Job(ph.name, "update", f"micro={U} rows={rows} W={W}",
                            lambda fn=fn, batch=batch: (fn, (state, batch), {}), 0,
                            pm.params + pm.optimizer + pm.train,
                            f"phases[{ph.name}].micro_rows, model.remat or mesh.sequence"))
            continue
        s = rl_step_shapes(ph, cfg.rl, PREFILL_CHUNK)
        M, U, Bm, W, R, G = s.updates, s.micro, s.rows, s.W, s.R, s.G
        Nm = Bm * G
        rows2, rows3 = step_fns.rows_sharding(mesh, 2, 1), step_fns.rows_sharding(mesh, 2, 0)
        batch = {k: arr((M, U, Bm, W), jnp.int32, rows2) for k in grpo_step.ROW_KEYS}
        batch.update(unpack_idx_NR=arr((M, U, Nm, R), jnp.int32, rows2),
                     mask_NR=arr((M, U, Nm, R), jnp.float32, rows2),
                     old_logp_NR=arr((M, U, Nm, R), jnp.float32, rows2),
                     adv_N=arr((M, U, Nm), jnp.float32, rows3))
        ls = grpo_step.LossSettings.from_rl(cfg.rl)
        batch.update({k: arr((M, U, Nm, R), jnp.float32, rows2) for k in ls.token_keys})
        update, logp, _ = step_fns.grpo_fns(mcfg, ls, tx, mesh, state_sharding)
        shape = f"updates={M} micro={U} rows={Bm} W={W}"
        knob = "rl.micro_batch, model.remat or mesh.sequence"
        jobs.append(Job(ph.name, "old_logp", shape,
                        lambda logp=logp, batch=batch: (logp, (state.params, {
                            k: v for k, v in batch.items() if k not in ("old_logp_NR",) + ls.token_keys}), {}),
                        opt_bytes, None, knob))
        jobs.append(Job(ph.name, "update", shape,
                        lambda update=update, batch=batch: (update, (state, batch), {}), 0,
                        pm.params + pm.optimizer + pm.train, knob))
        jobs.append(_sample_job(ph.name, mcfg, state.params, s.sample_B, s.S, G, R,
                                strategies.from_flags(cfg.rl.temperature, cfg.rl.top_p,
                                                      cfg.rl.top_k, 0.0),
                                None, opt_bytes, pm.params + pm.optimizer + pm.sample,
                                "rl.rollout_batch"))
    for L in cfg.data.eval_lengths:
        S = sampler.bucket_length(int(L), PREFILL_CHUNK)
        B = -(-min(16, cfg.data.eval_per_length) // batch_axes) * batch_axes  # eval batch_size 16
        jobs.append(_sample_job(f"eval@{L}", mcfg, state.params, B, S, 1,
                                cfg.data.eval_max_new_tokens, strategies.Greedy(),
                                sharding.named(mesh, "batch", None), opt_bytes, None,
                                "data.eval_max_new_tokens or data.eval_lengths", fn="generate"))
    return jobs


def _sample_job(phase, mcfg, params, B, S, G, R, strategy, batch_sharding, resident, plan_bytes,
                knob, fn="sample") -> Job:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from qwenlong_jax.rollout import PREFILL_CHUNK
    from qwenlong_jax.sampling import sampler

    def build():
        tokens = jax.ShapeDtypeStruct((B, S), jnp.int32, sharding=batch_sharding)
        lens_sh = None if batch_sharding is None else jax.sharding.NamedSharding(
            batch_sharding.mesh, jax.sharding.PartitionSpec(batch_sharding.spec[0]))
        lens = jax.ShapeDtypeStruct((B,), jnp.int32, sharding=lens_sh)
        keys = jax.eval_shape(lambda: sampler.sample_keys(0, np.arange(B), G))
        kw = dict(max_new_tokens=R, strategy=strategy, eos_ids=EOS_PLACEHOLDER,
                  prefill_chunk=PREFILL_CHUNK)
        return sampler.sample_groups, (mcfg, params, tokens, lens, keys), kw

    return Job(phase, fn, f"B={B} S={S} G={G} R={R}", build, resident, plan_bytes, knob)


def compile_job(job: Job, mesh, hbm: int) -> FnResult:
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
    return res


def _gib(n: int | None) -> str:
    """Bytes as GiB with one decimal ("12.3G"), or MiB below 1 GiB ("45.6M")."""
    if n is None:
        return "-"
    return f"{n / GIB:.1f}G" if abs(n) >= GIB else f"{n / 2**20:.1f}M"


def format_table(results: Sequence[FnResult]) -> str:
    head = (f"{'phase':<9} {'function':<9} {'status':<7} {'args':>7} {'temp':>7} {'resid':>6} "
            f"{'total':>7} {'HBM':>6} {'plan':>7} {'plan/c':>6} {'TFLOP':>8} {'Mosaic':>6} "
            f"{'compile':>8}  shape")
    lines = [head, "(bytes per chip; total = args + outputs + temp - aliased + resident optimizer "
             "state; plan/c = planner / compiler total)"]
    for r in results:
        status = "OK" if r.fits else ("no fit" if r.ok else "FAILED")
        ratio = (f"{r.plan_bytes / r.total_bytes:.2f}" if r.ok and r.plan_bytes and r.total_bytes
                 else "-")
        lines.append(
            f"{r.phase:<9} {r.fn:<9} {status:<7} {_gib(r.argument_bytes):>7} "
            f"{_gib(r.temp_bytes):>7} {_gib(r.resident_bytes):>6} {_gib(r.total_bytes):>7} "
            f"{_gib(r.hbm_bytes):>6} {_gib(r.plan_bytes):>7} {ratio:>6} "
            f"{r.flops / 1e12:>8.1f} {r.mosaic_kernels:>6} {r.compile_s:>7.0f}s  {r.shape}")
        if not r.ok:
            lines.append(f"          {r.error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qwenlong_jax.compile",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="configs/x.py[:arg]")
    ap.add_argument("--topology", default="", help="TPU topology, e.g. v5p:4x4x4 (default: the "
                    "config mesh's chip count on v5p)")
    ap.add_argument("--phases", default="", help="comma-separated phase names (default: all)")
    ap.add_argument("--functions", default="", help="comma-separated function names "
                    "(update, old_logp, sample, generate; default: all)")
    ap.add_argument("--json", default="", help="also write the results to this file")
    args, rest = ap.parse_known_args(argv)
    bad = [a for a in rest if not (a.startswith("--config.") and "=" in a)]
    if bad:
        ap.error(f"unrecognized arguments: {' '.join(bad)} (overrides are --config.a.b=value)")

    from qwenlong_jax import tpu_topology
    if not tpu_topology.libtpu_available():
        print(f"error: {tpu_topology.INSTALL}", file=sys.stderr)
        return 1
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

    from qwenlong_jax import plan, sharding
    from qwenlong_jax.config import ConfigError

    try:
        cfg = plan.load_config(args.config, [a[len("--config."):] for a in rest])
        topology = args.topology or default_topology(cfg)
        hbm = tpu_topology.hbm_bytes(topology)
        devices = tpu_topology.topology_devices(topology)
        try:
            mesh = sharding.make_mesh(cfg.mesh, devices)
        except (ValueError, AssertionError) as e:
            raise ConfigError(f"mesh {cfg.mesh} on {topology} ({len(devices)} chips): {e}; set "
                              "--config.mesh.* to use every chip, or pass --topology") from None
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
    print(f"{args.config} on {topology} ({len(devices)} chips, {hbm / GIB:.1f} GiB HBM each), "
          f"mesh {dict(mesh.shape)}: compiling {len(jobs)} functions", flush=True)
    results = []
    for job in jobs:
        r = compile_job(job, mesh, hbm)
        results.append(r)
        status = "OK" if r.fits else ("does not fit" if r.ok else "FAILED")
        print(f"  {r.phase} {r.fn}: {status} ({_gib(r.total_bytes)}, {r.compile_s:.0f}s)"
              + (f" {r.error}" if r.error else ""), flush=True)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "overrides": [a[len("--config."):] for a in rest],
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
