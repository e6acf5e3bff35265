"""Memory planner: per-device memory of every phase, before anything compiles.

    python -m qwenlong_jax.plan --config configs/r1_distill_32b_tpu.py   # v5p: 64 chips, 95.7 GiB
    python -m qwenlong_jax.plan --config configs/r1_distill_32b_gpu.py   # H100: 128, 59.3 of 79.1 GiB
    python -m qwenlong_jax.plan --config configs/default.py --devices 1

    phases = estimate(cfg, num_devices, backend="gpu")   # [PhaseMemory], bytes per device
    check_fits(cfg, num_devices, hbm_bytes)      # PlanError naming the knob when a phase won't fit

Per phase, the terms (params, the KL reference when rl.kl_coef > 0, optimizer, gradients,
activations, logits, kv_cache, sampling) are priced by memory_terms.py at the shapes
step_shapes.py gives the trainer; peak = params + reference + optimizer + max(update terms,
sampling terms). The sampler and the update never run at once, so the peak is the larger of
the two; the optimizer state and the reference stay resident during sampling. The terms are
checked against the compiler's buffer assignment (`compiled.memory_analysis()`): by
`python -m qwenlong_jax.compile` for XLA:TPU (the 32B TPU config's phases on v5p:4x4x4 and
Qwen2.5-1.5B GRPO at 8K on v5p:2x2x1) and XLA:GPU (the 32B GPU config's phases on 16 x 8 H100):
within 20% (docs/benchmarks.md "Compile check: the recorded tables", tests/test_plan.py against the recorded figures), and for the tiny configs on
CPU by tests/test_plan.py (within 25%). The backend matters for one term: how many gradient-sized
buffers the update keeps (GRADIENT_COPIES). Memory per device and the backend default to the
config file's COMPILE_TARGET (qwenlong_jax/targets.py). They are estimates: the compiler may keep
fewer or more copies.
"""
from __future__ import annotations

import os

import jax

from qwenlong_jax import step_shapes
from qwenlong_jax.config import Config, ConfigError
from qwenlong_jax.cli.flags import load_config  # noqa: F401  (plan.load_config, as before)
from qwenlong_jax.memory_terms import (PhaseMemory, mesh_sizes, param_elements_per_device, sample_memory,
                                       train_memory)
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.step_shapes import PREFILL_CHUNK  # noqa: F401  (plan.PREFILL_CHUNK, as before)

GIB = 2**30


class PlanError(ConfigError):
    """A phase that will not fit in device memory; the message names the knob to change."""


# --- the model and the mesh ------------------------------------------------------------------

def model_config(cfg: Config) -> ModelConfig:
    """The ModelConfig the trainer will build (run_setup.model_config: the checkpoint's
    config.json when init_from is set, else the named size with the tokenizer's vocabulary)."""
    from qwenlong_jax import run_setup

    vocab = None
    if cfg.model.size == "tiny" and not cfg.model.vocab_size and not cfg.model.init_from:
        from qwenlong_jax.data.tokenizer import load_tokenizer

        vocab = load_tokenizer(run_setup.tokenizer_path(cfg)).vocab_size
    return run_setup.model_config(cfg, vocab)


# --- the estimate -----------------------------------------------------------------------------

# f32 gradient-sized buffers the update keeps besides the parameters and optimizer state, plus one
# gradient accumulator when the step has micro-batches. Fitted to the compilers' buffer
# assignment of the 32B configs' SFT and GRPO updates (docs/benchmarks.md, "Compile check: the recorded tables"): XLA:TPU's
# temporaries hold three, XLA:GPU's one (0.97-1.01 of the compiler with it, 1.16-1.26 with
# three). Which buffers XLA:TPU keeps that XLA:GPU does not was not traced. CPU is priced as TPU.
GRADIENT_COPIES = {"gpu": 1}
GRADIENT_COPIES_DEFAULT = 3


def backend_kind(platform: str | None = None) -> str:
    """"tpu" | "gpu" | "cpu" for a jax platform name (default: this process's backend)."""
    platform = platform or jax.default_backend()
    return {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)


def estimate(cfg: Config, num_devices: int, mcfg: ModelConfig | None = None,
             backend: str | None = None) -> list[PhaseMemory]:
    """PhaseMemory (bytes per device) for every phase of `cfg` on `num_devices` devices of
    `backend` ("tpu" | "gpu" | "cpu"; default: this process's backend)."""
    mcfg = mcfg or model_config(cfg)
    copies = GRADIENT_COPIES.get(backend_kind(backend), GRADIENT_COPIES_DEFAULT)
    m, amesh = mesh_sizes(cfg, num_devices)
    n_param = param_elements_per_device(mcfg, amesh)
    pb = 2 if mcfg.param_dtype in ("bfloat16", "float16") else 4
    params, optimizer = n_param * pb, 2 * n_param * 4
    batch_axes = m.data * m.fsdp
    reference = params if cfg.keeps_kl_reference else 0  # in the train state from the start
    out = []
    for ph in cfg.phases:
        if ph.kind == "rl":
            s = step_shapes.rl_step_shapes(ph, cfg.rl)
            kv, samp = sample_memory(mcfg, m, s.sample_B, s.G, s.S, s.R, n_param)
            shape = (f"B={s.B} G={s.G} S={s.S} R={s.R} W={s.W} rows/micro={s.rows} "
                     f"micro={s.micro} updates={s.updates} sampled/call={s.sample_B}")
            N_local = s.B * s.G
            # rows [M, U, rows, W] x 4 int32; per-token [M, U, rows*G, R] x 3 (4 bytes)
            batch = (s.updates * s.micro * (4 * 4 * m.split(s.rows, "data", "fsdp") * s.W)
                     + 3 * 4 * m.split(N_local, "data", "fsdp") * s.R)
        else:
            s = step_shapes.sft_step_shapes(ph, batch_axes)
            kv = samp = 0
            shape = f"rows/micro={s.rows} micro={s.micro} W={s.W}"
            batch = 5 * 4 * m.split(s.rows, "data", "fsdp") * s.W
        acts, logits = train_memory(mcfg, m, s.rows, s.W)
        grads = n_param * 4 * (copies + (1 if s.micro > 1 else 0))
        out.append(PhaseMemory(ph.name, ph.kind, shape, params, optimizer, grads, acts, logits, batch, kv, samp,
                               reference))
    return out


# --- refusal ---------------------------------------------------------------------------------

def _knob(cfg: Config, mcfg: ModelConfig, pm: PhaseMemory) -> str:
    parts = {"params+optimizer": pm.resident}
    if pm.train >= pm.sample:
        parts.update(activations=pm.activations, logits=pm.logits, gradients=pm.gradients)
    else:
        parts.update(kv_cache=pm.kv_cache, sampling=pm.sampling)
    big = max(parts, key=parts.get)
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
        knob = (f"rl.rollout_batch (prompts sampled at once), phases[{pm.phase}].max_output "
                f"or mesh.tensor")
    else:
        knob = "model.attention_impl='flash'" if mcfg.attention_impl == "xla" else f"phases[{pm.phase}].batch"
    return f"{big} is the largest part ({parts[big] / GIB:.1f} GiB); change {knob}"


def check_fits(cfg: Config, num_devices: int, hbm_bytes: int, mcfg: ModelConfig | None = None,
               backend: str | None = None) -> list[PhaseMemory]:
    """Raise PlanError (one line, naming the knob) for the first phase whose estimated peak
    exceeds `hbm_bytes` per device; return the estimates otherwise."""
    mcfg = mcfg or model_config(cfg)
    phases = estimate(cfg, num_devices, mcfg, backend)
    for pm in phases:
        if pm.peak > hbm_bytes:
            raise PlanError(
                f"phase {pm.phase}: needs ~{pm.peak / GIB:.1f} GiB per device, {hbm_bytes / GIB:.1f} GiB "
                f"available ({pm.shape}); {_knob(cfg, mcfg, pm)}")
    resident = max((pm.resident for pm in phases), default=0)
    for length, need in heldout_memory(cfg, num_devices, mcfg):
        if resident + need > hbm_bytes:
            raise PlanError(
                f"held-out set data.eval_lengths={length}: generating needs ~{(resident + need) / GIB:.1f} GiB "
                f"per device, {hbm_bytes / GIB:.1f} GiB available; lower data.eval_lengths or "
                "data.eval_max_new_tokens")
    return phases


EVAL_BATCH = 16  # held-out prompts per sampling call (eval.sweep.accuracy_by_length)
PROMPT_OVERHEAD = 64  # chat template and question around a synthetic document (tokens, at most)


def heldout_memory(cfg: Config, num_devices: int, mcfg: ModelConfig) -> list[tuple[int, int]]:
    """(length, kv cache + sampling bytes per device) of generating each synthetic held-out set
    (data.eval_lengths; used when data.train_files is empty)."""
    if cfg.data.train_files:
        return []
    from qwenlong_jax.sampling import sampler

    m, amesh = mesh_sizes(cfg, num_devices)
    n_param = param_elements_per_device(mcfg, amesh)
    out = []
    for length in cfg.data.eval_lengths:
        S = sampler.bucket_length(length + PROMPT_OVERHEAD, step_shapes.PREFILL_CHUNK)
        kv, samp = sample_memory(mcfg, m, min(EVAL_BATCH, cfg.data.eval_per_length), 1, S,
                                 cfg.data.eval_max_new_tokens, n_param)
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


if __name__ == "__main__":  # `python -m qwenlong_jax.plan`: the command line is qwenlong_jax/cli/plan.py
    import importlib  # by name: that module imports this one (as a library, not as __main__)
    cli = importlib.import_module("qwenlong_jax.cli.plan")
    cli.flags.run(cli.main)
