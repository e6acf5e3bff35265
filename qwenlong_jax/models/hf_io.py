"""Load and save HF (transformers) Qwen2/Qwen3 checkpoints: config.json + safetensors.

Loading never holds the whole model in one host's memory: every parameter is created with
`jax.make_array_from_callback` in its target sharding, and the callback reads only the
slice of each tensor that the local shard needs (safetensors slices are lazy, memory-mapped).
No torch is involved.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open

from qwenlong_jax.models import params as params_lib
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.models.hf_config import CheckpointError, model_config_to_hf, read_hf_config

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


# --- name and layout mapping ------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorMap:
    """How one of our (per-layer) arrays is read from an HF tensor.

    kind: "id" same layout; "t" 2-D transpose; "split_rows" HF [X*H, D] -> ours [D, X, H];
    "split_cols" HF [D, X*H] -> ours [X, H, D]; "split_vec" HF [X*H] -> ours [X, H].
    """

    hf_name: str  # with "{i}" for the layer index
    kind: str


def tensor_maps(cfg: ModelConfig) -> dict[str, TensorMap]:
    lay = "model.layers.{i}."
    m = {
        "embed": TensorMap("model.embed_tokens.weight", "id"),
        "final_norm": TensorMap("model.norm.weight", "id"),
        "layers/attn_norm": TensorMap(lay + "input_layernorm.weight", "id"),
        "layers/mlp_norm": TensorMap(lay + "post_attention_layernorm.weight", "id"),
        "layers/q": TensorMap(lay + "self_attn.q_proj.weight", "split_rows"),
        "layers/k": TensorMap(lay + "self_attn.k_proj.weight", "split_rows"),
        "layers/v": TensorMap(lay + "self_attn.v_proj.weight", "split_rows"),
        "layers/o": TensorMap(lay + "self_attn.o_proj.weight", "split_cols"),
        "layers/gate": TensorMap(lay + "mlp.gate_proj.weight", "t"),
        "layers/up": TensorMap(lay + "mlp.up_proj.weight", "t"),
        "layers/down": TensorMap(lay + "mlp.down_proj.weight", "t"),
    }
    if cfg.qkv_bias:
        for x in "qkv":
            m[f"layers/{x}_bias"] = TensorMap(lay + f"self_attn.{x}_proj.bias", "split_vec")
    if cfg.qk_norm:
        for x in "qk":
            m[f"layers/{x}_norm"] = TensorMap(lay + f"self_attn.{x}_norm.weight", "id")
    if not cfg.tie_word_embeddings:
        m["lm_head"] = TensorMap("lm_head.weight", "t")
    return m


def _hf_shape(kind: str, ours: tuple[int, ...]) -> tuple[int, ...]:
    if kind == "id":
        return ours
    if kind == "t":
        return ours[::-1]
    if kind == "split_rows":
        D, X, H = ours
        return (X * H, D)
    if kind == "split_cols":
        X, H, D = ours
        return (D, X * H)
    if kind == "split_vec":
        X, H = ours
        return (X * H,)
    raise AssertionError(kind)


def _norm(s: slice, n: int) -> tuple[int, int]:
    start, stop, step = s.indices(n)
    assert step == 1
    return start, stop


def _read(sl, kind: str, ours_shape: tuple[int, ...], idx: tuple[slice, ...]) -> np.ndarray:
    """Read the region `idx` of our array from an HF tensor slice handle."""
    r = [_norm(s, n) for s, n in zip(idx, ours_shape)]
    if kind == "id":
        return np.asarray(sl[tuple(slice(a, b) for a, b in r)])
    if kind == "t":
        (a0, a1), (b0, b1) = r
        return np.asarray(sl[b0:b1, a0:a1]).T
    if kind == "split_rows":
        (d0, d1), (x0, x1), (h0, h1) = r
        H = ours_shape[2]
        block = np.asarray(sl[x0 * H:x1 * H, d0:d1])  # [x*H, d]
        return block.reshape(x1 - x0, H, d1 - d0).transpose(2, 0, 1)[:, :, h0:h1]
    if kind == "split_cols":
        (x0, x1), (h0, h1), (d0, d1) = r
        H = ours_shape[1]
        block = np.asarray(sl[d0:d1, x0 * H:x1 * H])  # [d, x*H]
        return block.reshape(d1 - d0, x1 - x0, H).transpose(1, 2, 0)[:, h0:h1, :]
    if kind == "split_vec":
        (x0, x1), (h0, h1) = r
        H = ours_shape[1]
        return np.asarray(sl[x0 * H:x1 * H]).reshape(x1 - x0, H)[:, h0:h1]
    raise AssertionError(kind)


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
            self.weight_map = {k: SINGLE_FILE for k in self._open(SINGLE_FILE).keys()}
        else:
            raise CheckpointError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE} found")

    def _open(self, fname: str):
        if fname not in self._handles:
            try:
                self._handles[fname] = safe_open(os.path.join(self.path, fname), framework="flax")
            except Exception as e:  # SafetensorError (corrupt header), OSError (missing file)
                raise CheckpointError(f"{os.path.join(self.path, fname)}: cannot read safetensors "
                                      f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
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
    flat_specs = {"/".join(str(getattr(k, "key", k)) for k in p): s for p, s in
                  jax.tree_util.tree_flatten_with_path(specs, is_leaf=params_lib.is_spec)[0]}
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
            want = _hf_shape(tm.kind, ours)
            if got != want:
                raise CheckpointError(f"{path}: tensor {name} has shape {got}, config.json implies {want}")

    if mesh is not None:
        from qwenlong_jax.parallel import sharding
        shardings = sharding.param_shardings(params_lib.logical_axes(cfg), params_lib.param_shapes(cfg), mesh)
    else:
        single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(lambda _: single, params_lib.param_shapes(cfg))
    flat_shardings = {"/".join(str(getattr(k, "key", k)) for k in p): s for p, s in
                      jax.tree_util.tree_flatten_with_path(shardings)[0]}
    np_dtype = jnp.dtype(dtype)

    def make(key: str) -> jax.Array:
        shape, _ = flat_specs[key]
        tm = maps[key]
        stacked = key.startswith("layers/")

        def cb(idx: tuple[slice, ...]) -> np.ndarray:
            if not stacked:
                return _read(st.slice(tm.hf_name), tm.kind, shape, idx).astype(np_dtype)
            l0, l1 = _norm(idx[0], shape[0])
            return np.stack([
                _read(st.slice(tm.hf_name.format(i=i)), tm.kind, shape[1:], idx[1:]).astype(np_dtype)
                for i in range(l0, l1)
            ])

        return jax.make_array_from_callback(shape, flat_shardings[key], cb)

    flat = {key: make(key) for key in flat_specs}
    params = jax.tree_util.tree_map_with_path(
        lambda p, _: flat["/".join(str(getattr(k, "key", k)) for k in p)], specs, is_leaf=params_lib.is_spec
    )
    return cfg, params


# --- saving -----------------------------------------------------------------------------

def _hf_tensor(kind: str, ours: np.ndarray) -> np.ndarray:
    if kind == "id":
        return ours
    if kind == "t":
        return ours.T
    if kind == "split_rows":
        D, X, H = ours.shape
        return ours.transpose(1, 2, 0).reshape(X * H, D)
    if kind == "split_cols":
        X, H, D = ours.shape
        return ours.transpose(2, 0, 1).reshape(D, X * H)
    if kind == "split_vec":
        return ours.reshape(-1)
    raise AssertionError(kind)


def _to_host(x: jax.Array) -> np.ndarray:
    from qwenlong_jax.parallel.sharding import to_host
    return np.asarray(to_host(x))


def save_hf_checkpoint(
    path: str,
    cfg: ModelConfig,
    params: dict,
    *,
    dtype=None,
    max_shard_bytes: int = 5 * 1024**3,
    extra_files: dict[str, str] | None = None,
) -> None:
    """Write config.json + safetensors (sharded with an index above `max_shard_bytes`).

    Tensors are fetched to the host one layer at a time; only process 0 writes.
    """
    from safetensors.flax import save_file

    dtype = jnp.dtype(dtype or cfg.param_dtype)
    maps = tensor_maps(cfg)
    flat = {"/".join(str(getattr(k, "key", k)) for k in p): v
            for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}

    def tensors() -> Callable:
        for key, tm in maps.items():
            arr = flat[key]
            if key.startswith("layers/"):
                for i in range(cfg.num_layers):
                    yield tm.hf_name.format(i=i), _hf_tensor(tm.kind, _to_host(arr[i]))
            else:
                yield tm.hf_name, _hf_tensor(tm.kind, _to_host(arr))

    write = jax.process_index() == 0
    if write:
        os.makedirs(path, exist_ok=True)
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    total = 0
    for name, t in tensors():
        nbytes = t.size * dtype.itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = jnp.asarray(t, dtype=dtype)
        size += nbytes
        total += nbytes
    if not write:
        return
    if len(shards) == 1:
        save_file(shards[0], os.path.join(path, SINGLE_FILE), metadata={"format": "pt"})
        for stale in (INDEX_FILE,):
            if os.path.exists(os.path.join(path, stale)):
                os.remove(os.path.join(path, stale))
    else:
        weight_map = {}
        n = len(shards)
        for k, shard in enumerate(shards):
            fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
            save_file(shard, os.path.join(path, fname), metadata={"format": "pt"})
            weight_map.update({name: fname for name in shard})
        with open(os.path.join(path, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(model_config_to_hf(cfg, dtype.name), f, indent=2)
    for fname, text in (extra_files or {}).items():
        with open(os.path.join(path, fname), "w") as f:
            f.write(text)
