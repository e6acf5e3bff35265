"""Memory planner, command line: per-device memory of every phase of a config, before anything
compiles (the library: qwenlong_jax/capacity/planner.py).

    python -m qwenlong_jax.plan --config configs/r1_distill_32b_tpu.py   # v5p: 64 chips, 95.7 GiB
    python -m qwenlong_jax.plan --config configs/r1_distill_32b_gpu.py   # H100: 128, 59.3 of 79.1 GiB
    python -m qwenlong_jax.plan --config configs/default.py --devices 1
"""
from __future__ import annotations

import math
import sys

import jax
from absl import flags

from qwenlong_jax import config_cli
from qwenlong_jax.capacity.planner import GIB, PlanError, backend_kind, check_fits, estimate, format_table
from qwenlong_jax.config import Config, ConfigError
from qwenlong_jax.config_cli import load_config  # noqa: F401  (plan.load_config, as before)
from qwenlong_jax.run.spec import RunSpec, run_mesh


def main(argv: list[str] | None = None) -> int:
    """python -m qwenlong_jax.plan --config configs/x.py[:arg] [--config.a.b=v ...] [--devices N]
    [--hbm_gib G]; 0 when every phase fits, 2 when one does not, 1 on bad input."""
    argv = sys.argv[1:] if argv is None else list(argv)
    fv, config = config_cli.new_flags(argv)
    devices = flags.DEFINE_integer("devices", 0, "device count (default: the mesh's, or this host's)",
                                   flag_values=fv)
    hbm_gib = flags.DEFINE_float("hbm_gib", 0.0, "memory per device (default: the config's "
                                 "COMPILE_TARGET's, see qwenlong_jax/capacity/targets.py)", flag_values=fv)
    backend_flag = flags.DEFINE_enum("backend", None, ["tpu", "gpu", "cpu"], "whose compiler to "
                                     "price (default: the config's COMPILE_TARGET's kind, else "
                                     "this host's backend)", flag_values=fv)
    try:
        cfg = config_cli.parse(fv, config, argv)
        spec = fv["config"].config_filename
        n = devices.value or _mesh_devices(cfg) or jax.device_count()
        from qwenlong_jax.capacity import targets
        named = config_cli.config_target(spec)
        target = targets.parse(named) if named else None
        backend = backend_flag.value or (target.kind if target else None)
        hbm = int(hbm_gib.value * GIB) if hbm_gib.value else (target.memory_bytes if target else None)
        run = RunSpec.build(cfg, run_mesh(cfg, num_devices=n))
        mcfg, phases = run.mcfg, estimate(run, backend)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = f"{mcfg.num_params / 1e9:.2f}B" if mcfg.num_params >= 1e9 else f"{mcfg.num_params / 1e6:.2f}M"
    print(f"{spec}: {size} params, mesh {cfg.mesh} on {n} {backend_kind(backend)} devices, "
          f"dtype {mcfg.dtype}, remat {mcfg.remat}, attention {mcfg.attention_impl}")
    print(format_table(phases, hbm))
    if hbm:
        try:
            check_fits(run, hbm, backend)
        except PlanError as e:
            print(f"does not fit: {e}")
            return 2
    return 0


def _mesh_devices(cfg: Config) -> int:
    sizes = cfg.mesh.sizes()
    return 0 if -1 in sizes else math.prod(sizes)


if __name__ == "__main__":
    sys.exit(main())
