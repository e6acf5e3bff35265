"""Run an attention kernel once per shard of the batch and heads (flash and blockwise).

Attention is independent per batch row and per kv-head group, so no shard talks to another;
XLA cannot partition a Mosaic kernel by itself ("Mosaic kernels cannot be automatically
partitioned"). A sharded sequence needs ring_attention instead.
"""

from __future__ import annotations

import jax
from jax.sharding import NamedSharding, PartitionSpec as P


def run_per_shard(local, args, *, mesh=None, batch_axis=None, head_axis=None):
    """local(q, k, v, q_seg, kv_seg) once, or per shard of the batch and heads: under `mesh`
    (automatic axes) over batch_axis / head_axis, or over the Explicit axes q is sharded on.
    Attention is independent per batch row and per kv-head group, so no shard talks to another
    (shared by the flash and blockwise kernels; a sharded sequence needs ring_attention)."""
    q_BTNH, _, _, q_segment_ids_BT, kv_segment_ids_BS = args
    explicit_mesh, spec = _explicit_sharding(q_BTNH)
    if explicit_mesh is None and mesh is not None and mesh.size > 1:
        qkv, seg = P(batch_axis, None, head_axis, None), P(batch_axis, None)
        specs = (
            qkv,
            qkv,
            qkv,
            seg if q_segment_ids_BT is not None else None,
            seg if kv_segment_ids_BS is not None else None,
        )
        return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=qkv, check_vma=False)(*args)
    mesh = explicit_mesh
    if mesh is None:
        return local(*args)
    # Explicitly sharded inputs (the model's activations): batch and heads are independent, so
    # run the kernel per shard. A sharded sequence needs ring_attention instead.
    if spec[1] is not None:
        raise ValueError(
            f"attention: q's sequence dim is sharded over {spec[1]!r}; use ring_attention for sequence parallelism"
        )
    qkv, seg = P(spec[0], None, spec[2], None), P(spec[0], None)
    specs = (
        qkv,
        qkv,
        qkv,
        seg if q_segment_ids_BT is not None else None,
        seg if kv_segment_ids_BS is not None else None,
    )
    args = [x if s is None else jax.reshard(x, NamedSharding(mesh, s)) for x, s in zip(args, specs)]
    # check_vma=False: jax 0.10.2's Pallas interpreter loses the varying-axes annotation.
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=qkv, check_vma=False)(*args)


def _explicit_sharding(x):
    """(mesh, per-dim spec) when x is sharded over Explicit mesh axes at trace time, else None."""
    sharding = jax.typeof(x).sharding
    spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
    if all(s is None for s in spec):
        return None, spec
    return sharding.mesh, spec
