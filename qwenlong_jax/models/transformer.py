"""Qwen2 / Qwen3 dense decoder as pure functions over the params pytree of params.py.

Written as functions rather than flax Modules on purpose: the same layer function serves
training (full self-attention over packed rows), chunked prefill and shared-prefix decode
(the sampler passes its own `attend`), scan-over-layers is a plain `lax.scan` over the
stacked layer params, and HF import is a pytree of arrays. Flax supplies the sharding
vocabulary (logical axis names -> mesh axes, see parallel/sharding.py).

Numerics follow transformers' Qwen2/Qwen3: RMSNorm in float32 then cast back, q/k RMSNorm
per head before RoPE (Qwen3), rotate-half RoPE, SwiGLU MLP, no o_proj bias.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from qwenlong_jax.models import rope
from qwenlong_jax.models.attention import self_attention
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.parallel import sharding

# attend(layer_index, q_BTNH, k_BTKH, v_BTKH, layer_state) -> (out_BTNH, new_layer_state)
AttendFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, Any], tuple[jax.Array, Any]]

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def rms_norm(x, weight, eps: float):
    dtype = x.dtype
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    w = weight.astype(dtype).reshape((1,) * (x.ndim - 1) + weight.shape)
    return w * x32.astype(dtype)


def qkv(cfg: ModelConfig, lp: dict, x_BTD, cos_BTH, sin_BTH):
    """Project to q, k, v with biases / qk-norm and RoPE applied."""
    dt = jnp.dtype(cfg.dtype)
    h_BTD = rms_norm(x_BTD, lp["attn_norm"], cfg.rms_norm_eps)
    q = jnp.einsum("btd,dnh->btnh", h_BTD, lp["q"].astype(dt))
    k = jnp.einsum("btd,dkh->btkh", h_BTD, lp["k"].astype(dt))
    v = jnp.einsum("btd,dkh->btkh", h_BTD, lp["v"].astype(dt))
    if cfg.qkv_bias:
        q = q + lp["q_bias"].astype(dt)[None, None]
        k = k + lp["k_bias"].astype(dt)[None, None]
        v = v + lp["v_bias"].astype(dt)[None, None]
    if cfg.qk_norm:
        q = rms_norm(q, lp["q_norm"], cfg.rms_norm_eps)
        k = rms_norm(k, lp["k_norm"], cfg.rms_norm_eps)
    q = sharding.constrain(rope.apply_rope(q, cos_BTH, sin_BTH), ("batch", "length", "heads", None))
    k = sharding.constrain(rope.apply_rope(k, cos_BTH, sin_BTH), ("batch", "length", "kv_heads", None))
    v = sharding.constrain(v, ("batch", "length", "kv_heads", None))
    return q, k, v


def attn_out_and_mlp(cfg: ModelConfig, lp: dict, x_BTD, attn_BTNH):
    dt = jnp.dtype(cfg.dtype)
    x_BTD = x_BTD + jnp.einsum("btnh,nhd->btd", attn_BTNH, lp["o"].astype(dt))
    h_BTD = rms_norm(x_BTD, lp["mlp_norm"], cfg.rms_norm_eps)
    gate_BTF = jnp.einsum("btd,df->btf", h_BTD, lp["gate"].astype(dt))
    up_BTF = jnp.einsum("btd,df->btf", h_BTD, lp["up"].astype(dt))
    act_BTF = sharding.constrain(jax.nn.silu(gate_BTF) * up_BTF, ("batch", "length", "mlp"))
    x_BTD = x_BTD + jnp.einsum("btf,fd->btd", act_BTF, lp["down"].astype(dt))
    return sharding.constrain(x_BTD, ("batch", "length", "embed"))


def decoder_stack(
    cfg: ModelConfig,
    layers: dict,
    x_BTD: jax.Array,
    positions_BT: jax.Array,
    attend: AttendFn,
    layer_states: Any = None,
):
    """Runs all layers. `layer_states` (leading axis L, or None) is threaded through `attend`.

    Returns (x_BTD, new_layer_states).
    """
    cos, sin = rope.rope_cos_sin(cfg, positions_BT)

    def layer(x, lp_and_state):
        lp, idx, state = lp_and_state
        q, k, v = qkv(cfg, lp, x, cos, sin)
        attn, new_state = attend(idx, q, k, v, state)
        return attn_out_and_mlp(cfg, lp, x, attn), new_state

    if cfg.remat != "none":
        layer = jax.checkpoint(layer, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    idx_L = jnp.arange(cfg.num_layers)
    if cfg.scan_layers:
        return jax.lax.scan(layer, x_BTD, (layers, idx_L, layer_states))
    new_states = []
    for i in range(cfg.num_layers):
        lp_i = jax.tree.map(lambda a, i=i: a[i], layers)
        st_i = None if layer_states is None else jax.tree.map(lambda a, i=i: a[i], layer_states)
        x_BTD, st = layer(x_BTD, (lp_i, idx_L[i], st_i))
        new_states.append(st)
    if new_states[0] is None:
        return x_BTD, None
    return x_BTD, jax.tree.map(lambda *a: jnp.stack(a), *new_states)


def embed(cfg: ModelConfig, params: dict, tokens_BT: jax.Array, gather_table: bool = True) -> jax.Array:
    """The tokens' embeddings, in the activations' layout ("batch", "length", "embed").

    gather_table (the training forward): the table is gathered over fsdp first, as every FSDP
    weight is where it is used, its vocab rows still split over tensor -- a lookup XLA partitions
    (a masked local take, summed over tensor) -- into the layout the lookup gives (D whole), and
    only then into the activations' layout. Looked up from the table as stored (D split over
    fsdp), the [B, T, D] result had to move from embed-over-fsdp to batch-over-fsdp, which XLA:GPU
    does by materialising it whole on every device ("involuntary full rematerialization": an
    all-gather of a whole micro-batch of activations). The middle constraint is needed: without
    it XLA:CPU's partitioner returned wrong rows with the batch split over data and sequence and
    D over fsdp. The samplers pass False: they look up a [B, 512] chunk or one token per sample,
    less than the gathered table would cost (1.3 GiB more per GPU in the 32B sampler)."""
    if not gather_table:
        x = jnp.take(params["embed"], tokens_BT, axis=0).astype(jnp.dtype(cfg.dtype))
        return sharding.constrain(x, ("batch", "length", "embed"))
    table_VD = sharding.constrain(params["embed"], ("vocab", None))
    x = sharding.constrain(jnp.take(table_VD, tokens_BT, axis=0), ("batch", "length", None))
    return sharding.constrain(x.astype(jnp.dtype(cfg.dtype)), ("batch", "length", "embed"))


def lm_head_weight(cfg: ModelConfig, params: dict) -> jax.Array:
    """[D, V] output projection (the embedding transposed when tied)."""
    return params["embed"].T if cfg.tie_word_embeddings else params["lm_head"]


def final_hidden(cfg: ModelConfig, params: dict, x_BTD: jax.Array) -> jax.Array:
    return rms_norm(x_BTD, params["final_norm"], cfg.rms_norm_eps)


def logits_from_hidden(cfg: ModelConfig, params: dict, h_BTD: jax.Array) -> jax.Array:
    w_DV = lm_head_weight(cfg, params).astype(jnp.dtype(cfg.dtype))
    logits = jnp.einsum("btd,dv->btv", h_BTD, w_DV, preferred_element_type=jnp.float32)
    return sharding.constrain(logits, ("batch", "length", "vocab"))


def default_positions(tokens_BT: jax.Array) -> jax.Array:
    B, T = tokens_BT.shape
    return jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32)[None], (B, T))


def hidden_states(
    cfg: ModelConfig,
    params: dict,
    tokens_BT: jax.Array,
    positions_BT: jax.Array | None = None,
    segment_ids_BT: jax.Array | None = None,
    *,
    shared_prefix_segment: int | None = None,
) -> jax.Array:
    """Final-normed hidden states [B, T, D] (the LM head is applied separately, in chunks)."""
    if positions_BT is None:
        positions_BT = default_positions(tokens_BT)

    def attend(_idx, q, k, v, state):
        out = self_attention(cfg, q, k, v, segment_ids_BT=segment_ids_BT, shared_prefix_segment=shared_prefix_segment)
        return out, state

    x, _ = decoder_stack(cfg, params["layers"], embed(cfg, params, tokens_BT), positions_BT, attend)
    return final_hidden(cfg, params, x)


def forward(
    cfg: ModelConfig,
    params: dict,
    tokens_BT: jax.Array,
    positions_BT: jax.Array | None = None,
    segment_ids_BT: jax.Array | None = None,
    *,
    shared_prefix_segment: int | None = None,
) -> jax.Array:
    """Float32 logits [B, T, V].

    positions_BT: RoPE positions (default 0..T-1). segment_ids_BT: packed sequences; tokens
    attend causally within equal ids, 0 = padding. shared_prefix_segment: keys of that
    segment are visible to every other segment (GRPO group packing, see docs/design.md).
    """
    h = hidden_states(cfg, params, tokens_BT, positions_BT, segment_ids_BT, shared_prefix_segment=shared_prefix_segment)
    return logits_from_hidden(cfg, params, h)
