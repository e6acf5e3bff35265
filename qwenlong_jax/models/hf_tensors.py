"""How an HF (transformers) Qwen2/Qwen3 checkpoint lays out our arrays: file names, tensor names,
and the transposes/splits between an HF tensor and our (per-layer) array, both ways.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qwenlong_jax.models.config import ModelConfig

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


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


def hf_shape(kind: str, ours: tuple[int, ...]) -> tuple[int, ...]:
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


def norm_slice(s: slice, n: int) -> tuple[int, int]:
    start, stop, step = s.indices(n)
    assert step == 1
    return start, stop


def read_region(sl, kind: str, ours_shape: tuple[int, ...], idx: tuple[slice, ...]) -> np.ndarray:
    """Read the region `idx` of our array from an HF tensor slice handle."""
    r = [norm_slice(s, n) for s, n in zip(idx, ours_shape)]
    if kind == "id":
        return np.asarray(sl[tuple(slice(a, b) for a, b in r)])
    if kind == "t":
        (a0, a1), (b0, b1) = r
        return np.asarray(sl[b0:b1, a0:a1]).T
    if kind == "split_rows":
        (d0, d1), (x0, x1), (h0, h1) = r
        H = ours_shape[2]
        block = np.asarray(sl[x0 * H : x1 * H, d0:d1])  # [x*H, d]
        return block.reshape(x1 - x0, H, d1 - d0).transpose(2, 0, 1)[:, :, h0:h1]
    if kind == "split_cols":
        (x0, x1), (h0, h1), (d0, d1) = r
        H = ours_shape[1]
        block = np.asarray(sl[d0:d1, x0 * H : x1 * H])  # [d, x*H]
        return block.reshape(d1 - d0, x1 - x0, H).transpose(1, 2, 0)[:, h0:h1, :]
    if kind == "split_vec":
        (x0, x1), (h0, h1) = r
        H = ours_shape[1]
        return np.asarray(sl[x0 * H : x1 * H]).reshape(x1 - x0, H)[:, h0:h1]
    raise AssertionError(kind)


def hf_tensor(kind: str, ours: np.ndarray) -> np.ndarray:
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
