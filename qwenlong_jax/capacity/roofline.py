"""A step-time ESTIMATE (a roofline, not a measurement) read from a compiled program's HLO.

    cost = analyze(compiled.as_text())           # per-chip totals, loop bodies x trip counts
    est = estimate(cost, CHIPS["v5p"])           # seconds per bound and the one that dominates
    est.seconds, est.bound                       # e.g. 81.2, "hbm"
    summary(compiled.as_text(), chip)            # the same as a JSON-able dict

The pieces: the HLO text parser (capacity/hlo.py), the cost of one instruction
(capacity/op_cost.py, capacity/flops.py), loop trip counts (capacity/trip_count.py), the walk
that multiplies loop bodies out (capacity/hlo_cost.py), the chips' published peaks
(capacity/chips.py) and the time per bound (capacity/cost.py). The estimate is the largest of
the compute, memory and communication times (assumed to overlap perfectly), so it is a LOWER
bound on the step time of the program on that chip. Here the per-function estimates are put
together into the estimated time of one RL step.
"""

from __future__ import annotations

from qwenlong_jax.capacity.chips import Chip
from qwenlong_jax.capacity.cost import estimate
from qwenlong_jax.capacity.hlo_cost import analyze


def summary(hlo_text: str, chip: Chip) -> dict:
    """The estimate of one run of a compiled program on `chip`, as a JSON-able dict."""
    cost = analyze(hlo_text)
    est = estimate(cost, chip)
    return dict(
        chip=chip.name,
        seconds=est.seconds,
        bound=est.bound,
        compute_s=est.compute_s,
        hbm_s=est.hbm_s,
        collective_s=est.collective_s,
        flops=cost.flops,
        hbm_bytes=cost.hbm_bytes,
        collective_bytes=cost.collective_bytes,
        assumed=cost.assumed,
    )


def rl_step_seconds(spec, ps, est_by_fn: dict[str, dict]) -> dict | None:
    """Estimated seconds of one RL step of phase `ps` (a RunSpec's PhaseSpec: its step shapes) from
    its functions' estimates: sampler calls per generation round (gen_B / sample_B prompts per
    call) x one round, the old-logprob pass (twice when the state holds a KL reference) and the
    update. None when a function has no estimate."""
    from qwenlong_jax.sampling.samplers import REFILL_CHUNK

    refill = spec.cfg.rl.sampler == "group_refill"
    if any(not est_by_fn.get(f) for f in (("prefill", "decode") if refill else ("sample",)) + ("old_logp", "update")):
        return None
    s = ps.shapes
    calls = -(-s.gen_B // s.sample_B)
    logp_passes = 2 if spec.holds_reference else 1
    if refill:  # every prompt prefilled once; the slots decode max_output steps per slot-full of prompts
        chunks = calls * -(-s.R // REFILL_CHUNK)
        sample = s.gen_B * est_by_fn["prefill"]["seconds"] + chunks * est_by_fn["decode"]["seconds"]
    else:
        sample = calls * est_by_fn["sample"]["seconds"]
    parts = {
        "sample": sample,
        "old_logp": logp_passes * est_by_fn["old_logp"]["seconds"],
        "update": est_by_fn["update"]["seconds"],
    }
    return dict(
        calls=calls,
        logp_passes=logp_passes,
        parts=parts,
        seconds=sum(parts.values()),
        max_rounds=spec.cfg.rl.max_gen_rounds,
    )


def format_rl_steps(spec, results) -> str:
    """One line per RL phase: the estimated step time (roofline, one generation round)."""
    lines = []
    for ps in spec.phases:
        ph = ps.phase
        if ph.kind != "rl":
            continue
        by_fn = {r.fn: r.est for r in results if r.phase == ph.name}
        step = rl_step_seconds(spec, ps, by_fn)
        if step is None:
            continue
        from qwenlong_jax.sampling.samplers import REFILL_CHUNK

        p = step["parts"]
        how = (
            f"{ps.shapes.gen_B} prefills x {by_fn['prefill']['seconds']:.3g}s + "
            f"{step['calls'] * -(-ps.shapes.R // REFILL_CHUNK)} decode chunks x {by_fn['decode']['seconds']:.3g}s"
            if "prefill" in by_fn
            else f"{step['calls']} calls x {by_fn['sample']['seconds']:.3g}s"
        )
        lines.append(
            f"{ph.name}: estimated RL step (roofline, not measured) {step['seconds']:.0f}s = "
            f"sample {how} ({p['sample']:.0f}s, every sample at max_output) + old_logp {p['old_logp']:.0f}s "
            f"+ update {p['update']:.0f}s; each DAPO refill round (up to "
            f"{step['max_rounds']}) adds {p['sample']:.0f}s"
        )
    return "\n".join(lines)
