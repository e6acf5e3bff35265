"""Memory planner: per-device memory of every phase, before anything compiles.

    phases = estimate(spec, backend="gpu")   # [PhaseMemory] of a RunSpec, bytes per device
    check_fits(spec, hbm_bytes)              # PlanError naming the knob when a phase won't fit

Per phase, the terms (params, the KL reference when rl.kl_coef > 0, optimizer, gradients,
activations, logits, kv_cache, sampling) are priced by memory_terms.py at the shapes
step_shapes.py gives the trainer; peak = params + reference + optimizer + max(update terms,
sampling terms). The sampler and the update never run at once, so the peak is the larger of
the two; the optimizer state and the reference stay resident during sampling. The terms are
checked against the compiler's buffer assignment (`compiled.memory_analysis()`): by
`python -m qwenlong_jax.compile` for XLA:TPU (the 32B TPU config's phases on v5p:4x4x4 and
Qwen2.5-1.5B GRPO at 8K on v5p:2x2x1) and XLA:GPU (the 32B GPU config's phases on 16 x 8 H100):
within 20% (docs/benchmarks.md "Compile check: the recorded tables", tests/test_plan.py against
the recorded figures), and for the tiny configs on
CPU by tests/test_plan.py (within 25%). The backend matters for one term: how many gradient-sized
buffers the update keeps (GRADIENT_COPIES). Memory per device and the backend default to the
config file's COMPILE_TARGET (qwenlong_jax/capacity/targets.py). They are estimates: the compiler may keep
fewer or more copies.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import jax

from qwenlong_jax.capacity.memory_terms import (
    PhaseMemory,
    mesh_sizes,
    param_elements_per_device,
    sample_memory,
    train_memory,
)
from qwenlong_jax.config import ConfigError
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.run import step_shapes

if TYPE_CHECKING:
    from qwenlong_jax.run.spec import RunSpec

GIB = 2**30


class PlanError(ConfigError):
    """A phase that will not fit in device memory; the message names the knob to change."""


# --- the estimate -----------------------------------------------------------------------------

# f32 gradient-sized buffers the update keeps besides the parameters and optimizer state, plus one
# gradient accumulator when the step has micro-batches. Fitted to the compilers' buffer
# assignment of the 32B configs' SFT and GRPO updates (docs/benchmarks.md, "Compile check: the
# recorded tables"): XLA:TPU's
# temporaries hold three, XLA:GPU's one (0.97-1.01 of the compiler with it, 1.16-1.26 with
# three). Which buffers XLA:TPU keeps that XLA:GPU does not was not traced. CPU is priced as TPU.
GRADIENT_COPIES = {"gpu": 1}
GRADIENT_COPIES_DEFAULT = 3


def backend_kind(platform: str | None = None) -> str:
    """ "tpu" | "gpu" | "cpu" for a jax platform name (default: this process's backend)."""
    platform = platform or jax.default_backend()
    return {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)


def estimate(spec: RunSpec, backend: str | None = None) -> list[PhaseMemory]:
    """PhaseMemory (bytes per device) for every phase of the run `spec` on its mesh's devices of
    `backend` ("tpu" | "gpu" | "cpu"; default: this process's backend), at its step shapes."""
    mcfg = spec.mcfg
    copies = GRADIENT_COPIES.get(backend_kind(backend), GRADIENT_COPIES_DEFAULT)
    m = mesh_sizes(spec.mesh)
    n_param = param_elements_per_device(mcfg, spec.mesh)
    pb = 2 if mcfg.param_dtype in ("bfloat16", "float16") else 4
    params, optimizer = n_param * pb, 2 * n_param * 4
    reference = params if spec.holds_reference else 0  # in the train state from the start
    out = []
    for ps in spec.phases:
        ph, s = ps.phase, ps.shapes
        if ph.kind == "rl":
            assert isinstance(s, step_shapes.RLStepShapes)  # PhaseSpec: an RL phase has RL step shapes
            kv, samp = sample_memory(mcfg, m, s.sample_B, s.G, s.S, s.R, n_param)
            shape = (
                f"B={s.B} G={s.G} S={s.S} R={s.R} W={s.W} rows/micro={s.rows} "
                f"micro={s.micro} updates={s.updates} sampled/call={s.sample_B}"
            )
            N_local = s.B * s.G
            # rows [M, U, rows, W] x 4 int32; per-token [M, U, rows*G, R] x 3 (4 bytes)
            batch = (
                s.updates * s.micro * (4 * 4 * m.split(s.rows, "data", "fsdp") * s.W)
                + 3 * 4 * m.split(N_local, "data", "fsdp") * s.R
            )
        else:
            kv = samp = 0
            shape = f"rows/micro={s.rows} micro={s.micro} W={s.W}"
            batch = 5 * 4 * m.split(s.rows, "data", "fsdp") * s.W
        acts, logits = train_memory(mcfg, m, s.rows, s.W)
        grads = n_param * 4 * (copies + (1 if s.micro > 1 else 0))
        out.append(
            PhaseMemory(ph.name, ph.kind, shape, params, optimizer, grads, acts, logits, batch, kv, samp, reference)
        )
    return out


# --- refusal ---------------------------------------------------------------------------------


def _knob(mcfg: ModelConfig, pm: PhaseMemory) -> str:
    parts = {"params+optimizer": pm.resident}
    if pm.train >= pm.sample:
        parts.update(activations=pm.activations, logits=pm.logits, gradients=pm.gradients)
    else:
        parts.update(kv_cache=pm.kv_cache, sampling=pm.sampling)
    big = max(parts, key=lambda k: parts[k])
    if big == "params+optimizer" or big == "gradients":
        knob = "mesh.fsdp (shard params, gradients and optimizer state over more devices)"
    elif big == "activations":
        if mcfg.remat == "none":
            knob = "model.remat='full'"
        elif mcfg.attention_impl == "xla":
            knob = "model.attention_impl='flash'"
        elif pm.kind == "sft":
            knob = f"phases[{pm.phase}].micro_rows (packed rows per forward/backward) or mesh.sequence"
        else:
            knob = "rl.micro_batch (fewer packed rows per forward/backward) or mesh.sequence"
    elif big == "logits":
        knob = "model.logits_chunk"
    elif big == "kv_cache":
        knob = f"rl.rollout_batch (prompts sampled at once), phases[{pm.phase}].max_output or mesh.tensor"
    else:
        knob = "model.attention_impl='flash'" if mcfg.attention_impl == "xla" else f"phases[{pm.phase}].batch"
    return f"{big} is the largest part ({parts[big] / GIB:.1f} GiB); change {knob}"


def check_fits(spec: RunSpec, hbm_bytes: int, backend: str | None = None) -> list[PhaseMemory]:
    """Raise PlanError (one line, naming the knob) for the first phase whose estimated peak
    exceeds `hbm_bytes` per device; return the estimates otherwise."""
    phases = estimate(spec, backend)
    for pm in phases:
        if pm.peak > hbm_bytes:
            raise PlanError(
                f"phase {pm.phase}: needs ~{pm.peak / GIB:.1f} GiB per device, {hbm_bytes / GIB:.1f} GiB "
                f"available ({pm.shape}); {_knob(spec.mcfg, pm)}"
            )
    resident = max((pm.resident for pm in phases), default=0)
    for length, need in heldout_memory(spec):
        if resident + need > hbm_bytes:
            raise PlanError(
                f"held-out set data.eval_lengths={length}: generating needs ~{(resident + need) / GIB:.1f} GiB "
                f"per device, {hbm_bytes / GIB:.1f} GiB available; lower data.eval_lengths or "
                "data.eval_max_new_tokens"
            )
    return phases


def heldout_memory(spec: RunSpec) -> list[tuple[int, int]]:
    """(length, kv cache + sampling bytes per device) of generating each synthetic held-out set
    (data.eval_lengths; used when data.train_files is empty)."""
    cfg, mcfg = spec.cfg, spec.mcfg
    if cfg.data.train_files:
        return []
    m = mesh_sizes(spec.mesh)
    n_param = param_elements_per_device(mcfg, spec.mesh)
    out = []
    for length in cfg.data.eval_lengths:
        B, S = step_shapes.heldout_shape(length, cfg.data.eval_per_length, spec.batch_axes)
        kv, samp = sample_memory(mcfg, m, B, 1, S, cfg.data.eval_max_new_tokens, n_param)
        out.append((length, kv + samp))
    return out


def device_hbm_bytes(device: jax.Device | None = None) -> int | None:
    """The accelerator's memory limit when the backend reports one (GPU/TPU); None on CPU."""
    device = device or jax.local_devices()[0]  # memory_stats needs an addressable device
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def host_memory_bytes() -> int | None:
    """The host's physical memory (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def device_memory_bytes(local_devices: int = 1) -> int | None:
    """Memory per device that a run's phases must fit in: the accelerator's limit, or on CPU
    (where the run's `local_devices` devices on this host share its memory) the host's memory
    over that count. None when neither is known."""
    hbm = device_hbm_bytes()
    if hbm:
        return hbm
    host = host_memory_bytes()
    return host // max(local_devices, 1) if host else None


# --- table ---------------------------------------------------------------------------------

ROWS = (
    ("params", "params"),
    ("KL reference", "reference"),
    ("optimizer", "optimizer"),
    ("gradients", "gradients"),
    ("activations", "activations"),
    ("logits", "logits"),
    ("update inputs", "batch"),
    ("= update", "train"),
    ("kv cache", "kv_cache"),
    ("sampling work", "sampling"),
    ("= sampling", "sample"),
    ("PEAK", "peak"),
)


def format_table(phases: list[PhaseMemory], hbm_bytes: int | None = None) -> str:
    width = max(12, *(len(p.phase) + 2 for p in phases))
    unit, scale = ("GiB", GIB) if max(p.peak for p in phases) >= GIB else ("MiB", 2**20)
    lines = [f"{unit} per device".ljust(16) + "".join(p.phase.rjust(width) for p in phases)]
    for label, attr in ROWS:
        vals = [getattr(p, attr) / scale for p in phases]
        lines.append(label.ljust(16) + "".join(f"{v:{width}.2f}" for v in vals))
    if hbm_bytes:
        lines.append(
            f"fits {hbm_bytes / GIB:.0f} GiB?".ljust(16)
            + "".join(("yes" if p.peak <= hbm_bytes else "NO").rjust(width) for p in phases)
        )
    for p in phases:
        lines.append(f"  {p.phase} ({p.kind}): {p.shape}")
    return "\n".join(lines)
