"""Memory planner: per-device memory of every phase, before anything compiles.

    python -m qwenlong_jax.plan --config configs/r1_distill_32b_tpu.py              # v5p: 64 chips, 95 GiB
    python -m qwenlong_jax.plan --config configs/r1_distill_32b_gpu.py --hbm_gib 80
    python -m qwenlong_jax.plan --config configs/default.py --devices 1

    phases = estimate(cfg, num_devices)          # [PhaseMemory], bytes per device
    check_fits(cfg, num_devices, hbm_bytes)      # PlanError naming the knob when a phase won't fit

Per phase, on the config's mesh (each term divided by the mesh axes that shard it, by the
same sharding.RULES the run uses; a dimension its axes don't divide counts unsharded):
  params       every leaf in model.param_dtype
  optimizer    AdamW mu and nu, 2 x float32 per parameter
  gradients    the float32 accumulator, one micro-batch's gradients when rl.micro_batch splits
               the mini-batch, and the optimizer update's temporaries (updates, new moments
               before the non-finite select: 2 x float32 params)
  activations  forward/backward of one micro-batch of packed rows [prompt | G responses]
               (RL) or packed SFT rows, under model.remat: the residuals every layer keeps for
               the backward pass, plus one layer's full working set (recomputed under remat);
               with attention_impl="xla" the [rows, heads, W, W] scores and probabilities
  logits       one LM-head chunk (model.logits_chunk tokens x vocab, f32; the softmax and its
               gradient fuse into it, chunks are rematerialised) and the gathered hidden states
  kv_cache     sampling (RL): each prompt's KV once (L x B x S x K x H x 2) plus G response
               KVs (L x B x G x R x K x H x 2), in the compute dtype
  sampling     prefill of one chunk (attention scores and a layer's activations) or decode
               logits, plus the parameters cast to the compute dtype
  peak         params + optimizer + max(gradients + activations + logits, kv_cache + sampling)

The sampler and the update never run at once, so the peak is the larger of the two; the
optimizer state stays resident during sampling. The terms are checked against the compiler's
buffer assignment (`compiled.memory_analysis()`): by `python -m qwenlong_jax.compile` for
XLA:TPU (the 32B TPU config's phases on v5p:4x4x4 and Qwen2.5-1.5B GRPO at 8K on v5p:2x2x1:
within 20%, README), and for the tiny configs on CPU by tests/test_plan.py (within 25%). They
are estimates: other backends fuse differently, and the compiler may keep fewer or more copies.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import Sequence

import jax

from qwenlong_jax import models, sharding
from qwenlong_jax.config import Config, ConfigError, PhaseConfig, build_model_config
from qwenlong_jax.models.config import ModelConfig

GIB = 2**30
PREFILL_CHUNK = 512  # rollout.PREFILL_CHUNK (the planner does not import the sampler at start-up)
# Known accelerators (per chip / GPU).
HBM_GIB = {"tpu-v5p": 95.0, "tpu-v5e": 16.0, "tpu-v4": 32.0, "h100": 80.0, "h200": 141.0, "a100": 80.0}


class PlanError(ConfigError):
    """A phase that will not fit in device memory; the message names the knob to change."""


@dataclasses.dataclass(frozen=True)
class PhaseMemory:
    """Bytes per device for one phase (see the module docstring for each term)."""

    phase: str
    kind: str
    shape: str  # the shapes the numbers are for, human readable
    params: int
    optimizer: int
    gradients: int
    activations: int
    logits: int
    batch: int  # the update's input arrays
    kv_cache: int
    sampling: int

    @property
    def train(self) -> int:
        return self.gradients + self.activations + self.logits + self.batch

    @property
    def sample(self) -> int:
        return self.kv_cache + self.sampling

    @property
    def peak(self) -> int:
        return self.params + self.optimizer + max(self.train, self.sample)


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


@dataclasses.dataclass(frozen=True)
class _Mesh:
    data: int
    fsdp: int
    tensor: int
    sequence: int

    def split(self, n: int, *axes: str) -> int:
        """n per device over `axes`; unsharded when they don't divide n (sharding.constrain)."""
        k = math.prod(getattr(self, a) for a in axes)
        return n // k if n % k == 0 else n


def _mesh(cfg: Config, num_devices: int) -> tuple[_Mesh, jax.sharding.AbstractMesh]:
    try:
        sizes = cfg.mesh.resolve(num_devices)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return _Mesh(*sizes), sharding.abstract_mesh(cfg.mesh, num_devices)


def _param_elements_per_device(mcfg: ModelConfig, amesh) -> int:
    try:
        specs = sharding.param_shardings_specs(models.logical_axes(mcfg), models.param_shapes(mcfg), amesh)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    shapes = jax.tree.leaves(models.param_shapes(mcfg))
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    total = 0
    for shape, spec in zip(shapes, spec_leaves):
        n = 1
        for i, dim in enumerate(shape.shape):
            entry = spec[i] if i < len(spec) else None
            n *= dim // sharding.mesh_axis_size(amesh, entry)
        total += n
    return total


# --- per-phase shapes --------------------------------------------------------------------------

def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def rl_shapes(cfg: Config, phase: PhaseConfig) -> dict:
    """The shapes the trainer compiles for an RL phase (the trainer's own rl_step_shapes)."""
    from qwenlong_jax.rollout import rl_step_shapes

    return dataclasses.asdict(rl_step_shapes(phase, cfg.rl, PREFILL_CHUNK))


def sft_shapes(cfg: Config, phase: PhaseConfig, batch_axes: int) -> dict:
    """Worst case of sft_round.sft_step: one example per packed row; `rows` per micro-batch."""
    W = _round_up(phase.max_input + phase.max_output, 64)
    rows = _round_up(1 << (phase.batch - 1).bit_length(), batch_axes)
    micro = phase.micro_rows or rows
    return dict(W=W, rows=micro, micro=_round_up(rows, micro) // micro)


# --- the terms -----------------------------------------------------------------------------------

def _layer_tokens(mcfg: ModelConfig, m: _Mesh) -> tuple[int, int]:
    """(elements a layer keeps per token with no remat, elements per token under remat='dots')."""
    D, H = mcfg.hidden_size, mcfg.head_dim
    NH = m.split(mcfg.num_heads, "tensor") * H
    KH = m.split(mcfg.num_kv_heads, "tensor") * H
    F = m.split(mcfg.intermediate_size, "tensor")
    # x, norm(x), q, k, v, roped q/k, attention out, residual, norm, gate, up, act, mlp out
    full = 6 * D + 3 * NH + 3 * KH + 3 * F
    dots = NH + 2 * KH + 2 * D + 2 * F  # matmul outputs: q k v, o-proj, gate up, down
    return full, dots


def train_memory(mcfg: ModelConfig, m: _Mesh, rows: int, W: int) -> tuple[int, int]:
    """(activations, logits) bytes per device for forward+backward of `rows` packed rows of W."""
    cb = 2 if mcfg.dtype in ("bfloat16", "float16") else 4
    L, V = mcfg.num_layers, m.split(mcfg.vocab_size, "tensor")
    rows_d = m.split(rows, "data", "fsdp")
    W_d = m.split(W, "sequence")
    T = rows_d * W_d  # tokens per device
    N_d = m.split(mcfg.num_heads, "tensor")
    full, dots = _layer_tokens(mcfg, m)
    xla = mcfg.attention_impl == "xla"
    scores = rows_d * N_d * W_d * W if xla else 0  # [rows, heads, W, W] elements
    lse = rows_d * N_d * W_d * 4  # flash/ring keep the log-sum-exp
    norm32 = 2 * mcfg.hidden_size * 4  # the float32 RMSNorm copies
    saved_layer = {  # bytes a layer keeps for the backward pass
        "none": T * (full * cb + norm32) + (8 * scores if xla else lse),  # scores + probs, f32
        "dots": T * dots * cb + 4 * scores + (0 if xla else lse),
        "dots_no_batch": T * dots * cb + (0 if xla else lse),
        "full": T * mcfg.hidden_size * cb,  # the layer input only
    }[mcfg.remat]
    # One layer live in full during its backward (recomputed under remat): activations, and
    # scores, probabilities and their gradient for xla attention.
    working = T * (full * cb + norm32) + 12 * scores
    activations = L * saved_layer + working
    C = min(mcfg.logits_chunk, T)
    # One f32 [chunk, vocab] buffer (XLA:TPU fuses the chunk's softmax and its gradient into
    # it; three were assumed before the compile check) + the gathered hidden states.
    logits = C * V * 4 + 2 * T * mcfg.hidden_size * cb
    return activations, logits


def sample_memory(mcfg: ModelConfig, m: _Mesh, B: int, G: int, S: int, R: int,
                  n_param: int = 0) -> tuple[int, int]:
    """(kv_cache, sampling work) bytes per device for B prompts of S tokens, G x R new tokens;
    n_param: parameter elements per device (their compute-dtype copy is sampling work)."""
    cb = 2 if mcfg.dtype in ("bfloat16", "float16") else 4
    L, H = mcfg.num_layers, mcfg.head_dim
    B_d = m.split(B, "data", "fsdp")
    K_d = m.split(mcfg.num_kv_heads, "tensor")
    N_d = m.split(mcfg.num_heads, "tensor")
    kv = 2 * L * B_d * (S + G * R) * K_d * H * cb
    C = min(PREFILL_CHUNK, S)
    D, F = mcfg.hidden_size, m.split(mcfg.intermediate_size, "tensor")
    # xla attention: a chunk's f32 scores [B, N, C, S] and a quarter copy more (XLA fuses the
    # softmax into its neighbours in part: 1.25-2 copies measured on CPU, 1.25 used).
    scores = 5 * B_d * N_d * C * S if mcfg.attention_impl == "xla" else 0
    prefill = scores + B_d * C * (2 * D + 2 * F) * cb
    V = mcfg.vocab_size  # decode logits are not vocab-sharded after the sampling softmax
    decode = 3 * B_d * G * V * 4 + 2 * 4 * B_d * G * N_d * (S + R)
    # The parameters are cast to the compute dtype once for the whole sampling call (measured
    # by the compile check on v5p). XLA:TPU also keeps part of a second prompt-KV copy (the
    # prefill scan's output): not modelled, as XLA:CPU does not; the estimate is 6-15% low on
    # the 32B phases, more for longer prompts.
    cast = n_param * cb if mcfg.param_dtype != mcfg.dtype else 0
    return kv, max(prefill, decode) + cast


def estimate(cfg: Config, num_devices: int, mcfg: ModelConfig | None = None) -> list[PhaseMemory]:
    """PhaseMemory (bytes per device) for every phase of `cfg` on `num_devices` devices."""
    mcfg = mcfg or model_config(cfg)
    m, amesh = _mesh(cfg, num_devices)
    n_param = _param_elements_per_device(mcfg, amesh)
    pb = 2 if mcfg.param_dtype in ("bfloat16", "float16") else 4
    params, optimizer = n_param * pb, 2 * n_param * 4
    batch_axes = m.data * m.fsdp
    out = []
    for ph in cfg.phases:
        if ph.kind == "rl":
            s = rl_shapes(cfg, ph)
            kv, samp = sample_memory(mcfg, m, s["sample_B"], s["G"], s["S"], s["R"], n_param)
            shape = (f"B={s['B']} G={s['G']} S={s['S']} R={s['R']} W={s['W']} rows/micro={s['rows']} "
                     f"micro={s['micro']} updates={s['updates']} sampled/call={s['sample_B']}")
            N_local = s["B"] * s["G"]
            # rows [M, U, rows, W] x 4 int32; per-token [M, U, rows*G, R] x 3 (4 bytes)
            batch = (s["updates"] * s["micro"] * (4 * 4 * m.split(s["rows"], "data", "fsdp") * s["W"])
                     + 3 * 4 * m.split(N_local, "data", "fsdp") * s["R"])
        else:
            s = sft_shapes(cfg, ph, batch_axes)
            kv = samp = 0
            shape = f"rows/micro={s['rows']} micro={s['micro']} W={s['W']}"
            batch = 5 * 4 * m.split(s["rows"], "data", "fsdp") * s["W"]
        acts, logits = train_memory(mcfg, m, s["rows"], s["W"])
        grads = n_param * 4 * (3 + (1 if s["micro"] > 1 else 0))
        out.append(PhaseMemory(ph.name, ph.kind, shape, params, optimizer, grads, acts, logits, batch, kv, samp))
    return out


# --- refusal ---------------------------------------------------------------------------------

def _knob(cfg: Config, mcfg: ModelConfig, pm: PhaseMemory) -> str:
    parts = {"params+optimizer": pm.params + pm.optimizer}
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


def check_fits(cfg: Config, num_devices: int, hbm_bytes: int, mcfg: ModelConfig | None = None) -> list[PhaseMemory]:
    """Raise PlanError (one line, naming the knob) for the first phase whose estimated peak
    exceeds `hbm_bytes` per device; return the estimates otherwise."""
    mcfg = mcfg or model_config(cfg)
    phases = estimate(cfg, num_devices, mcfg)
    for pm in phases:
        if pm.peak > hbm_bytes:
            raise PlanError(
                f"phase {pm.phase}: needs ~{pm.peak / GIB:.1f} GiB per device, {hbm_bytes / GIB:.1f} GiB "
                f"available; {_knob(cfg, mcfg, pm)}")
    return phases


def device_hbm_bytes(device: jax.Device | None = None) -> int | None:
    """The accelerator's memory limit when the backend reports one (GPU/TPU); None on CPU."""
    device = device or jax.local_devices()[0]  # memory_stats needs an addressable device
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


# --- table ---------------------------------------------------------------------------------

ROWS = (("params", "params"), ("optimizer", "optimizer"), ("gradients", "gradients"),
        ("activations", "activations"), ("logits", "logits"), ("update inputs", "batch"),
        ("= update", "train"), ("kv cache", "kv_cache"), ("sampling work", "sampling"),
        ("= sampling", "sample"), ("PEAK", "peak"))


def format_table(phases: list[PhaseMemory], hbm_bytes: int | None = None) -> str:
    width = max(12, *(len(p.phase) + 2 for p in phases))
    unit, scale = ("GiB", GIB) if max(p.peak for p in phases) >= GIB else ("MiB", 2**20)
    lines = [f"{unit} per device".ljust(16) + "".join(p.phase.rjust(width) for p in phases)]
    for label, attr in ROWS:
        vals = [getattr(p, attr) / scale for p in phases]
        lines.append(label.ljust(16) + "".join(f"{v:{width}.2f}" for v in vals))
    if hbm_bytes:
        lines.append(f"fits {hbm_bytes / GIB:.0f} GiB?".ljust(16) + "".join(
            ("yes" if p.peak <= hbm_bytes else "NO").rjust(width) for p in phases))
    for p in phases:
        lines.append(f"  {p.phase} ({p.kind}): {p.shape}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qwenlong_jax.plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="configs/x.py[:arg]")
    ap.add_argument("--devices", type=int, default=0, help="device count (default: the mesh's, or this host's)")
    ap.add_argument("--hbm_gib", type=float, default=0.0, help="memory per device (default: from the config name)")
    args, rest = ap.parse_known_args(argv)
    bad = [a for a in rest if not (a.startswith("--config.") and "=" in a)]
    if bad:
        ap.error(f"unrecognized arguments: {' '.join(bad)} (overrides are --config.a.b=value)")
    try:
        cfg = load_config(args.config, [a[len("--config."):] for a in rest])
        n = args.devices or _mesh_devices(cfg) or jax.device_count()
        hbm = int(args.hbm_gib * GIB) if args.hbm_gib else _guess_hbm(args.config)
        mcfg = model_config(cfg)
        phases = estimate(cfg, n, mcfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = f"{mcfg.num_params / 1e9:.2f}B" if mcfg.num_params >= 1e9 else f"{mcfg.num_params / 1e6:.2f}M"
    print(f"{args.config}: {size} params, mesh {cfg.mesh} on {n} devices, "
          f"dtype {mcfg.dtype}, remat {mcfg.remat}, attention {mcfg.attention_impl}")
    print(format_table(phases, hbm))
    if hbm:
        try:
            check_fits(cfg, n, hbm, mcfg)
        except PlanError as e:
            print(f"does not fit: {e}")
            return 2
    return 0


def _override(c, assignment: str) -> None:
    """Apply "a.b=value" to a ConfigDict, parsing value as the field's current type (as
    train.py's --config.a.b=value does)."""
    import ast

    path, _, text = assignment.partition("=")
    *parents, leaf = path.split(".")
    node = c
    for name in parents:
        if name not in node:
            raise ConfigError(f"--config override: the config has no field {path!r}")
        node = node[name]
    if leaf not in node:
        raise ConfigError(f"--config override: the config has no field {path!r}")
    old = node[leaf]
    if isinstance(old, bool):
        if text.lower() not in ("true", "false"):
            raise ConfigError(f"--config.{path}: expected true/false, got {text!r}")
        value = text.lower() == "true"
    elif isinstance(old, (int, float)):
        try:
            value = type(old)(ast.literal_eval(text))
        except (ValueError, SyntaxError):
            raise ConfigError(f"--config.{path}: expected a number, got {text!r}") from None
    elif isinstance(old, str):
        value = text
    else:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ConfigError(f"--config.{path}: cannot parse {text!r}") from None
    node[leaf] = value


def load_config(spec: str, overrides: Sequence[str] = ()) -> Config:
    """A config file path (optionally path:arg) plus "a.b=value" overrides -> Config, as
    `--config` of train.py reads it."""
    import importlib.util
    import os

    from qwenlong_jax.config import from_config_dict

    path, _, arg = spec.partition(":")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if repo not in sys.path:
        sys.path.insert(0, repo)  # config files import configs.common
    if not os.path.exists(path):
        raise ConfigError(f"--config: {path} not found")
    mod_spec = importlib.util.spec_from_file_location("_plan_config", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    c = mod.get_config(arg or None)
    for o in overrides:
        _override(c, o)
    return from_config_dict(c)


def _mesh_devices(cfg: Config) -> int:
    sizes = cfg.mesh.sizes()
    return 0 if -1 in sizes else math.prod(sizes)


def _guess_hbm(config_path: str) -> int | None:
    name = config_path.lower()
    if "tpu" in name:
        return int(HBM_GIB["tpu-v5p"] * GIB)
    if "gpu" in name:
        return int(HBM_GIB["h100"] * GIB)
    return None


if __name__ == "__main__":
    sys.exit(main())
