"""python -m qwenlong_jax.plan --config configs/x.py[:arg] [--config.a.b=v ...] [--devices N] [--hbm_gib G]
    [--backend tpu|gpu|cpu]

The memory planner's table: per-device memory of every phase of the config, before anything
compiles (qwenlong_jax/capacity/planner.py), and whether each phase fits the memory per device.

    python -m qwenlong_jax.plan --config configs/r1_distill_32b_tpu.py   # v5p: 64 chips, 95.7 GiB
    python -m qwenlong_jax.plan --config configs/r1_distill_32b_gpu.py   # H100: 128, 59.3 of 79.1 GiB
    python -m qwenlong_jax.plan --config configs/default.py --devices 1

Memory per device and the backend default to the config file's COMPILE_TARGET
(qwenlong_jax/capacity/targets.py). Exit status: 0 when every phase fits, 2 when one does not, 1 on bad input.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from absl import flags as absl_flags

from qwenlong_jax.cli import config_files, flags


def main(argv: Sequence[str] | None = None) -> int:
    """0 when every phase fits, 2 when one does not, 1 on bad input."""
    cmd = flags.Command(__name__, __doc__, argv, config="")
    absl_flags.DEFINE_integer("devices", 0, "device count (default: the mesh's, or this host's)", flag_values=cmd.fv)
    absl_flags.DEFINE_float(
        "hbm_gib",
        0.0,
        "memory per device (default: the config's COMPILE_TARGET's, see qwenlong_jax/capacity/targets.py)",
        flag_values=cmd.fv,
    )
    absl_flags.DEFINE_enum(
        "backend",
        None,
        ["tpu", "gpu", "cpu"],
        "whose compiler to price (default: the config's COMPILE_TARGET's kind, else this host's backend)",
        flag_values=cmd.fv,
    )
    try:
        args = cmd.parse()
    except flags.FlagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    import jax

    from qwenlong_jax.capacity import targets
    from qwenlong_jax.capacity.planner import GIB, PlanError, backend_kind, check_fits, estimate, format_table
    from qwenlong_jax.config import ConfigError
    from qwenlong_jax.run.spec import RunSpec, run_mesh

    try:
        cfg = cmd.config()
        spec = cmd.config_filename
        n = args.devices or _mesh_devices(cfg) or jax.device_count()
        named = config_files.config_target(spec)
        target = targets.parse(named) if named else None
        backend = args.backend or (target.kind if target else None)
        hbm = int(args.hbm_gib * GIB) if args.hbm_gib else (target.memory_bytes if target else None)
        run = RunSpec.build(cfg, run_mesh(cfg, num_devices=n))
        mcfg, phases = run.mcfg, estimate(run, backend)
    except (flags.FlagError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = f"{mcfg.num_params / 1e9:.2f}B" if mcfg.num_params >= 1e9 else f"{mcfg.num_params / 1e6:.2f}M"
    print(
        f"{spec}: {size} params, mesh {cfg.mesh} on {n} {backend_kind(backend)} devices, "
        f"dtype {mcfg.dtype}, remat {mcfg.remat}, attention {mcfg.attention_impl}"
    )
    print(format_table(phases, hbm))
    if hbm:
        try:
            check_fits(run, hbm, backend)
        except PlanError as e:
            print(f"does not fit: {e}")
            return 2
    return 0


def _mesh_devices(cfg) -> int:
    sizes = cfg.mesh.sizes()
    return 0 if -1 in sizes else math.prod(sizes)
