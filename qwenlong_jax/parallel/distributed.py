"""Multi-host start-up: `jax.distributed.initialize` from the config, else from the environment.

    distributed.initialize()                                   # TPU pod / SLURM / Open MPI / k8s
    distributed.initialize("10.0.0.1:1234", num_processes=4, process_id=2)   # explicit

Every process runs the same program on its local devices; meshes span all processes' devices.
What the rest of the code does about it: each process reads its own shard of every batch and
the drawn example ids are all-gathered, so all processes hold the same global batch
(curriculum.PhaseData); host copies of global arrays go through `sharding.to_host`; only
process 0 writes metrics, plots and summaries, while every process takes part in the orbax
checkpoint and the HF export (each writes its own shards of one checkpoint).

On CPU-only hosts (JAX_PLATFORMS=cpu: the tests, CPU clusters) collectives run over gloo (TCP),
which must be chosen before the CPU backend starts -- hence here, not in user code.
"""

from __future__ import annotations

import os
from typing import Any

import jax


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
    """Join the multi-host job. Empty / 0 / -1 arguments are left to JAX's cluster detection
    (and JAX_COORDINATOR_ADDRESS). Idempotent: a second call in the same process is a no-op."""
    if jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs: dict[str, Any] = {}
    if coordinator_address:
        kwargs["coordinator_address"] = coordinator_address
    if num_processes:
        kwargs["num_processes"] = num_processes
    if process_id >= 0:
        kwargs["process_id"] = process_id
    jax.distributed.initialize(**kwargs)
