"""Mesh from the config, logical axis names -> PartitionSpec through one rules table.

Mesh axes: ("data", "fsdp", "tensor", "sequence"). Parameters and activations carry logical
axis names; RULES maps each to mesh axes. A mesh axis is used at most once per array: when two
dimensions of one array map to the same mesh axis, the first keeps it (so activations
`("batch", "length", "embed")` shard batch over data+fsdp and leave embed replicated, while
the parameter `("vocab", "embed")` shards embed over fsdp). Written here rather than with
flax.linen.logical_to_mesh_axes because that raises on such repeats instead of resolving them.

Everything is checked before compiling: a mesh that does not match the device count, or a
dimension that its mesh axes do not divide, is refused with one line naming the knob.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor", "sequence")

RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", ("sequence",)),
    ("embed", ("fsdp",)),
    ("mlp", ("tensor",)),
    ("heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("vocab", ("tensor",)),
    ("layers", ()),
    ("head_dim", ()),
    ("norm", ()),
)
_RULES = dict(RULES)
_OVERRIDES: list[dict[str, tuple[str, ...]]] = []  # sharding.rules(...) stack (trace time)


@contextlib.contextmanager
def rules(**overrides: tuple[str, ...]):
    """Trace code under other mesh axes for some logical names, e.g. the sampler's
    `rules(batch=("data", "fsdp", "sequence"), length=())`. Read when a function is traced
    (constrain, logical_to_spec), so wrap the body of the jitted function."""
    unknown = set(overrides) - set(_RULES)
    if unknown:
        raise ValueError(f"sharding.rules: no logical axis {', '.join(sorted(unknown))}")
    _OVERRIDES.append(overrides)
    try:
        yield
    finally:
        _OVERRIDES.pop()


def _rule(name: str) -> tuple[str, ...]:
    for o in reversed(_OVERRIDES):
        if name in o:
            return o[name]
    return _RULES[name]


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes; at most one may be -1 (takes the remaining devices)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    sequence: int = 1

    def __post_init__(self):
        sizes = self.sizes()
        if sum(s == -1 for s in sizes) > 1:
            raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
        for name, s in zip(MESH_AXES, sizes):
            if s == 0 or s < -1:
                raise ValueError(f"mesh.{name} must be a positive int or -1, got {s}")

    def sizes(self) -> tuple[int, ...]:
        return (self.data, self.fsdp, self.tensor, self.sequence)

    def resolve(self, num_devices: int) -> tuple[int, ...]:
        sizes = list(self.sizes())
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise ValueError(
                    f"mesh {dict(zip(MESH_AXES, self.sizes()))}: the fixed axes ({known}) do not "
                    f"divide the {num_devices} devices"
                )
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise ValueError(
                f"mesh data*fsdp*tensor*sequence = {'*'.join(map(str, sizes))} = {math.prod(sizes)} "
                f"does not match the {num_devices} available devices; change mesh.* in the config"
            )
        return tuple(sizes)


# GPUs: the order in which the mesh axes are laid over devices in process (node) order, the last
# innermost. The tensor axis goes innermost, so a tensor group sits on one node's NVLink: its
# all-reduces come twice a layer and cannot overlap compute. Sequence next (ring attention passes
# K/V blocks that overlap the compute, several times smaller with grouped KV heads), then the
# batch axes. On TPUs jax.make_mesh places the axes on the torus itself.
GPU_LAYOUT = ("data", "fsdp", "sequence", "tensor")


def make_mesh(cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    sizes = cfg.resolve(len(devices))
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if devices[0].platform != "gpu":
        return jax.make_mesh(sizes, MESH_AXES, axis_types=axis_types, devices=devices)
    size = dict(zip(MESH_AXES, sizes))
    flat = np.empty(len(devices), dtype=object)
    flat[:] = sorted(devices, key=lambda d: (d.process_index, d.id))
    grid = flat.reshape([size[a] for a in GPU_LAYOUT]).transpose([GPU_LAYOUT.index(a) for a in MESH_AXES])
    return Mesh(grid, MESH_AXES, axis_types=axis_types)


def logical_to_spec(axes: Sequence[str | None], mesh_axis_names: Sequence[str] = MESH_AXES) -> P:
    used: set[str] = set()
    out: list[str | tuple[str, ...] | None] = []
    for name in axes:
        if name is None:
            out.append(None)
            continue
        if name not in _RULES:
            raise ValueError(f"logical axis {name!r} has no rule in sharding.RULES")
        mesh_axes = tuple(a for a in _rule(name) if a in mesh_axis_names and a not in used)
        used.update(mesh_axes)
        out.append(mesh_axes if len(mesh_axes) > 1 else (mesh_axes[0] if mesh_axes else None))
    return P(*out)


def mesh_axis_size(mesh, spec_entry) -> int:
    if spec_entry is None:
        return 1
    names = (spec_entry,) if isinstance(spec_entry, str) else spec_entry
    return math.prod(mesh.shape[n] for n in names)


def batch_axis_size(mesh) -> int:
    """How many ways the mesh splits the batch dimension (data * fsdp)."""
    return mesh_axis_size(mesh, logical_to_spec(("batch",), mesh.axis_names)[0])


def check_divisible(name: str, shape: Sequence[int], axes: Sequence[str | None], mesh) -> None:
    """Raise one clear line when a dimension is not divisible by its mesh axes."""
    spec = logical_to_spec(axes, mesh.axis_names)
    for dim, logical, entry in zip(shape, axes, spec):
        size = mesh_axis_size(mesh, entry)
        if dim % size:
            mesh_names = entry if isinstance(entry, str) else "*".join(entry)
            raise ValueError(
                f"{name}: dimension {logical}={dim} is not divisible by mesh axis {mesh_names}={size}; "
                f"change mesh.{mesh_names.split('*')[0]} or the model/batch size"
            )


def param_shardings(logical_axes_tree, shapes_tree, mesh) -> dict:
    """NamedSharding pytree for parameters, after checking every dimension divides."""

    specs = param_shardings_specs(logical_axes_tree, shapes_tree, mesh)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def named(mesh, *axes: str | None) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, mesh.axis_names))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """with_sharding_constraint by logical names under the active mesh (`jax.set_mesh`);
    a no-op when no mesh is active or the array's dims don't divide (e.g. tiny decode steps)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    spec = logical_to_spec(axes, mesh.axis_names)
    for dim, entry in zip(x.shape, spec):
        if dim % mesh_axis_size(mesh, entry):
            return x
    return jax.lax.with_sharding_constraint(x, spec)


def to_host(tree):
    """jax.device_get that also works on arrays spanning several processes (multi-host): such a
    leaf is all-gathered, so every process gets the whole global value."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)

    return jax.tree.map(one, tree)


def process_allgather_ints(local_N: np.ndarray) -> np.ndarray:
    """[processes, N]: every process's `local_N` (host ints, the same N everywhere), in process
    order; the identity with one process."""
    if jax.process_count() == 1:
        return np.asarray(local_N)[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(local_N), tiled=False))


def devices_array(mesh) -> np.ndarray:
    return np.asarray(mesh.devices)


def abstract_mesh(cfg: MeshConfig, num_devices: int) -> jax.sharding.AbstractMesh:
    """The mesh a config implies on `num_devices` devices, without touching any device."""
    sizes = cfg.resolve(num_devices)
    return jax.sharding.AbstractMesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def check_layout(logical_axes_tree, shapes_tree, mesh, batch_sizes: dict[str, int] | None = None) -> None:
    """Every parameter dimension and every named batch size divides its mesh axes."""
    param_shardings_specs(logical_axes_tree, shapes_tree, mesh)
    for name, b in (batch_sizes or {}).items():
        check_divisible(name, (b,), ("batch",), mesh)


def param_shardings_specs(logical_axes_tree, shapes_tree, mesh) -> dict:
    """PartitionSpec pytree for parameters (works on abstract meshes too)."""

    def one(path, axes, shape):
        check_divisible("params" + jax.tree_util.keystr(path), shape.shape, axes, mesh)
        return logical_to_spec(axes, mesh.axis_names)

    def is_axes(x):
        return isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)

    return jax.tree_util.tree_map_with_path(one, logical_axes_tree, shapes_tree, is_leaf=is_axes)
