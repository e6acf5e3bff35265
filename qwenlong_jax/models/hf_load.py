"""Load HF (transformers) Qwen2/Qwen3 checkpoints: config.json + safetensors.

Loading never holds the whole model in one host's memory: every parameter is created with
`jax.make_array_from_callback` in its target sharding, and the callback reads only the
slice of each tensor that the local shard needs (safetensors slices are lazy, memory-mapped).
No torch is involved.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from qwenlong_jax.models import params as params_lib
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.models.hf_config import CheckpointError, read_hf_config
from qwenlong_jax.models.hf_tensors import INDEX_FILE, SINGLE_FILE, hf_shape, norm_slice, read_region, tensor_maps

# --- safetensors directory ------------------------------------------------------------


class _SafetensorsDir:
    """Tensor name -> file for a single or sharded safetensors checkpoint; lazy handles."""

    def __init__(self, path: str):
        self.path = path
        index = os.path.join(path, INDEX_FILE)
        self._handles: dict[str, object] = {}
        if os.path.exists(index):
            try:
                with open(index) as f:
                    self.weight_map = json.load(f)["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index}: not a safetensors index ({e})") from None
            for fname in sorted(set(self.weight_map.values())):
                self._open(fname)  # a missing or corrupt shard fails here, before any read
        elif os.path.exists(os.path.join(path, SINGLE_FILE)):
            handle = self._open(SINGLE_FILE)
            self.weight_map = {k: SINGLE_FILE for k in handle.keys()}  # noqa: SIM118 - a safetensors handle, not a dict
        else:
            raise CheckpointError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE} found")

    def _open(self, fname: str):
        if fname not in self._handles:
            try:
                self._handles[fname] = safe_open(os.path.join(self.path, fname), framework="flax")
            except Exception as e:  # SafetensorError (corrupt header), OSError (missing file)
                raise CheckpointError(
                    f"{os.path.join(self.path, fname)}: cannot read safetensors "
                    f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})"
                ) from None
        return self._handles[fname]

    def has(self, name: str) -> bool:
        return name in self.weight_map

    def slice(self, name: str):
        return self._open(self.weight_map[name]).get_slice(name)


def load_hf_checkpoint(
    path: str,
    dtype=jnp.float32,
    *,
    mesh: jax.sharding.Mesh | None = None,
    overrides: dict | None = None,
) -> tuple[ModelConfig, dict]:
    """Returns (ModelConfig, params). With `mesh`, params are created in their shardings.
    `overrides`: ModelConfig fields not in config.json (compute dtype, attention_impl, remat...)."""
    cfg = read_hf_config(path, param_dtype=jnp.dtype(dtype).name, **(overrides or {}))
    st = _SafetensorsDir(path)
    maps = tensor_maps(cfg)
    specs = params_lib.param_specs(cfg)
    flat_specs = {
        "/".join(str(getattr(k, "key", k)) for k in p): s
        for p, s in jax.tree_util.tree_flatten_with_path(specs, is_leaf=params_lib.is_spec)[0]
    }
    # Check every tensor is present with the expected shape before reading anything.
    for key, (shape, _) in flat_specs.items():
        tm = maps[key]
        stacked = key.startswith("layers/")
        ours = shape[1:] if stacked else shape
        for i in range(cfg.num_layers if stacked else 1):
            name = tm.hf_name.format(i=i)
            if not st.has(name):
                raise CheckpointError(f"{path}: missing tensor {name}")
            got = tuple(st.slice(name).get_shape())
            want = hf_shape(tm.kind, ours)
            if got != want:
                raise CheckpointError(f"{path}: tensor {name} has shape {got}, config.json implies {want}")

    if mesh is not None:
        from qwenlong_jax.parallel import sharding

        shardings = sharding.param_shardings(params_lib.logical_axes(cfg), params_lib.param_shapes(cfg), mesh)
    else:
        single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: single, params_lib.param_shapes(cfg))
    flat_shardings = {
        "/".join(str(getattr(k, "key", k)) for k in p): s for p, s in jax.tree_util.tree_flatten_with_path(shardings)[0]
    }
    np_dtype = jnp.dtype(dtype)

    def make(key: str) -> jax.Array:
        shape, _ = flat_specs[key]
        tm = maps[key]
        stacked = key.startswith("layers/")

        def cb(idx) -> np.ndarray:  # idx: tuple[slice, ...], the region of this shard
            if not stacked:
                return read_region(st.slice(tm.hf_name), tm.kind, shape, idx).astype(np_dtype)
            l0, l1 = norm_slice(idx[0], shape[0])
            return np.stack(
                [
                    read_region(st.slice(tm.hf_name.format(i=i)), tm.kind, shape[1:], idx[1:]).astype(np_dtype)
                    for i in range(l0, l1)
                ]
            )

        return jax.make_array_from_callback(shape, flat_shardings[key], cb)

    flat = {key: make(key) for key in flat_specs}
    params = jax.tree_util.tree_map_with_path(
        lambda p, _: flat["/".join(str(getattr(k, "key", k)) for k in p)], specs, is_leaf=params_lib.is_spec
    )
    return cfg, params
