"""Compile one job of the compile check (compile_jobs.py) with the target's compiler and read
back what it says: memory per device (`compiled.memory_analysis()`), FLOPs, Pallas kernels,
compile seconds and a roofline estimate; `format_table` prints the results.
(`python -m qwenlong_jax.compile` runs it for every job of a config.)
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from qwenlong_jax.capacity.compile_jobs import Job

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
        return self.argument_bytes + self.output_bytes + self.temp_bytes - self.alias_bytes + self.resident_bytes

    @property
    def fits(self) -> bool:
        return self.ok and self.total_bytes <= self.hbm_bytes

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(total_bytes=self.total_bytes, fits=self.fits)
        return d


def _one_line(e: BaseException) -> str:
    """The compiler's message in one line: the first line that says what went wrong."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if any(
            w in ln
            for w in ("Ran out of memory", "RESOURCE_EXHAUSTED", "vmem", "error", "Error", "INTERNAL", "INVALID")
        ):
            return f"{type(e).__name__}: {ln}"[:400]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:400]


def compile_job(job: Job, mesh, hbm: int, kind: str = "tpu", chip=None) -> FnResult:
    import jax

    from qwenlong_jax.capacity import targets

    res = FnResult(
        job.phase,
        job.fn,
        job.shape,
        resident_bytes=job.resident_bytes,
        plan_bytes=job.plan_bytes,
        hbm_bytes=hbm,
        knob=job.knob,
    )
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
        from qwenlong_jax.capacity import roofline

        res.est = roofline.summary(compiled.as_text(), chip)
    return res


def gib(n: int | None) -> str:
    """Bytes as GiB with one decimal ("12.3G"), or MiB below 1 GiB ("45.6M")."""
    if n is None:
        return "-"
    return f"{n / GIB:.1f}G" if abs(n) >= GIB else f"{n / 2**20:.1f}M"


def _tflop(flops: float | None) -> str:
    return "-" if flops is None else f"{flops / 1e12:.1f}"


def _est(r: FnResult) -> str:
    return "-" if not r.est else f"{r.est['seconds']:.3g}s {r.est['bound']}"


def format_table(results: Sequence[FnResult], kernel_name: str = "Mosaic") -> str:
    head = (
        f"{'phase':<9} {'function':<9} {'status':<7} {'args':>7} {'temp':>7} {'resid':>6} "
        f"{'total':>7} {'HBM':>6} {'plan':>7} {'plan/c':>6} {'TFLOP':>8} {kernel_name:>6} "
        f"{'compile':>8} {'est.':>13}  shape"
    )
    lines = [
        head,
        "(bytes per device; total = args + outputs + temp - aliased + resident "
        "optimizer state; HBM = what a run may allocate; plan/c = planner / compiler total; "
        "est. = roofline ESTIMATE of one call, not a measurement: qwenlong_jax/capacity/roofline.py)",
    ]
    for r in results:
        status = "OK" if r.fits else ("no fit" if r.ok else "FAILED")
        ratio = f"{r.plan_bytes / r.total_bytes:.2f}" if r.ok and r.plan_bytes and r.total_bytes else "-"
        lines.append(
            f"{r.phase:<9} {r.fn:<9} {status:<7} {gib(r.argument_bytes):>7} "
            f"{gib(r.temp_bytes):>7} {gib(r.resident_bytes):>6} {gib(r.total_bytes):>7} "
            f"{gib(r.hbm_bytes):>6} {gib(r.plan_bytes):>7} {ratio:>6} "
            f"{_tflop(r.flops):>8} {r.pallas_kernels:>6} {r.compile_s:>7.0f}s "
            f"{_est(r):>13}  {r.shape}"
        )
        if not r.ok:
            lines.append(f"          {r.error}")
    return "\n".join(lines)
