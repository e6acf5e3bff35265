"""python -m qwenlong_jax.plan --config configs/x.py[:arg] [--config.a.b=v ...] [--devices N] [--hbm_gib G]
    [--backend tpu|gpu|cpu]

The memory planner's table: per-device memory of every phase of the config, before anything
compiles (qwenlong_jax/plan.py), and whether each phase fits the memory per device.

    python -m qwenlong_jax.plan --config configs/r1_distill_32b_tpu.py   # v5p: 64 chips, 95.7 GiB
    python -m qwenlong_jax.plan --config configs/r1_distill_32b_gpu.py   # H100: 128, 59.3 of 79.1 GiB
    python -m qwenlong_jax.plan --config configs/default.py --devices 1

Memory per device and the backend default to the config file's COMPILE_TARGET
(qwenlong_jax/targets.py). Exit status: 0 when every phase fits, 2 when one does not, 1 on bad input.
"""
from __future__ import annotations

import math
import sys
from typing import Sequence

from absl import flags as absl_flags

from qwenlong_jax.cli import flags

ROWS = (("params", "params"), ("KL reference", "reference"), ("optimizer", "optimizer"),
        ("gradients", "gradients"), ("activations", "activations"), ("logits", "logits"), ("update inputs", "batch"),
        ("= update", "train"), ("kv cache", "kv_cache"), ("sampling work", "sampling"),
        ("= sampling", "sample"), ("PEAK", "peak"))


def format_table(phases: list, hbm_bytes: int | None = None) -> str:
    """The planner's PhaseMemory per phase as a table (GiB or MiB per device)."""
    from qwenlong_jax.plan import GIB

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


def main(argv: Sequence[str] | None = None) -> int:
    """0 when every phase fits, 2 when one does not, 1 on bad input."""
    cmd = flags.Command(__name__, __doc__, argv, config="")
    absl_flags.DEFINE_integer("devices", 0, "device count (default: the mesh's, or this host's)",
                              flag_values=cmd.fv)
    absl_flags.DEFINE_float("hbm_gib", 0.0, "memory per device (default: the config's COMPILE_TARGET's, "
                            "see qwenlong_jax/targets.py)", flag_values=cmd.fv)
    absl_flags.DEFINE_enum("backend", None, ["tpu", "gpu", "cpu"], "whose compiler to price (default: the "
                           "config's COMPILE_TARGET's kind, else this host's backend)", flag_values=cmd.fv)
    try:
        args = cmd.parse()
    except flags.FlagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    import jax

    from qwenlong_jax import targets
    from qwenlong_jax.config import ConfigError
    from qwenlong_jax.plan import GIB, PlanError, backend_kind, check_fits, estimate, model_config
    try:
        cfg = cmd.config()
        spec = cmd.config_filename
        n = args.devices or _mesh_devices(cfg) or jax.device_count()
        named = flags.config_target(spec)
        target = targets.parse(named) if named else None
        backend = args.backend or (target.kind if target else None)
        hbm = int(args.hbm_gib * GIB) if args.hbm_gib else (target.memory_bytes if target else None)
        mcfg = model_config(cfg)
        phases = estimate(cfg, n, mcfg, backend)
    except (flags.FlagError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = f"{mcfg.num_params / 1e9:.2f}B" if mcfg.num_params >= 1e9 else f"{mcfg.num_params / 1e6:.2f}M"
    print(f"{spec}: {size} params, mesh {cfg.mesh} on {n} {backend_kind(backend)} devices, "
          f"dtype {mcfg.dtype}, remat {mcfg.remat}, attention {mcfg.attention_impl}")
    print(format_table(phases, hbm))
    if hbm:
        try:
            check_fits(cfg, n, hbm, mcfg, backend)
        except PlanError as e:
            print(f"does not fit: {e}")
            return 2
    return 0


def _mesh_devices(cfg) -> int:
    sizes = cfg.mesh.sizes()
    return 0 if -1 in sizes else math.prod(sizes)
