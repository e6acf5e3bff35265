"""Save HF (transformers) Qwen2/Qwen3 checkpoints: config.json + safetensors, loadable by
transformers. Tensors are fetched to the host one layer at a time; only process 0 writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.models.hf_config import model_config_to_hf
from qwenlong_jax.models.hf_tensors import INDEX_FILE, SINGLE_FILE, hf_tensor, tensor_maps


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
    flat = {
        "/".join(str(getattr(k, "key", k)) for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
    }

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        for key, tm in maps.items():
            arr = flat[key]
            if key.startswith("layers/"):
                for i in range(cfg.num_layers):
                    yield tm.hf_name.format(i=i), hf_tensor(tm.kind, _to_host(arr[i]))
            else:
                yield tm.hf_name, hf_tensor(tm.kind, _to_host(arr))

    write = jax.process_index() == 0
    if write:
        os.makedirs(path, exist_ok=True)
    shards: list[dict[str, jax.Array]] = [{}]
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
