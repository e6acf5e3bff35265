"""The memory planner's model: bytes per device of each term of one phase (plan.py sums them).

On the config's mesh, each term is divided by the mesh axes that shard it, by the same
sharding.RULES the run uses; a dimension its axes don't divide counts unsharded:
  params       every leaf in model.param_dtype
  reference    the frozen KL reference policy, a second copy of the params, held in the train
               state for the whole run when rl.kl_coef > 0 and the run has an RL phase
  optimizer    AdamW mu and nu, 2 x float32 per parameter
  gradients    the float32 accumulator, one micro-batch's gradients when rl.micro_batch splits
               the mini-batch, and the optimizer update's temporaries (updates, new moments
               before the non-finite select: 2 x float32 params)
  activations  forward/backward of one micro-batch of packed rows [prompt | G responses]
               (RL) or packed SFT rows, under model.remat: the residuals every layer keeps for
               the backward pass, plus one layer's full working set (recomputed under remat);
               with attention_impl="xla" the [rows, heads, W, W] scores and probabilities
  logits       one LM-head chunk (model.logits_chunk tokens x vocab, f32; the softmax and its
               gradient fuse into it, chunks are rematerialised) and the gathered hidden states
  kv_cache     sampling (RL): each prompt's KV once (L x B x S x K x H x 2) plus G response
               KVs (L x B x G x R x K x H x 2), in the compute dtype
  sampling     prefill of one chunk (attention scores and a layer's activations) or decode
               logits, plus the parameters cast to the compute dtype
  peak         params + reference + optimizer + max(gradients + activations + logits,
               kv_cache + sampling)
"""

from __future__ import annotations

import dataclasses
import math

import jax

from qwenlong_jax import models
from qwenlong_jax.config import ConfigError
from qwenlong_jax.models.config import ModelConfig
from qwenlong_jax.parallel import sharding
from qwenlong_jax.run.step_shapes import PREFILL_CHUNK
from qwenlong_jax.sampling import decode, decode_attention


@dataclasses.dataclass(frozen=True)
class PhaseMemory:
    """Bytes per device for one phase (see the module docstring for each term)."""

    phase: str
    kind: str
    shape: str  # the shapes the numbers are for, human readable
    params: int
    optimizer: int
    gradients: int
    activations: int
    logits: int
    batch: int  # the update's input arrays
    kv_cache: int
    sampling: int
    reference: int = 0  # the KL reference's params (rl.kl_coef > 0), resident like the optimizer

    @property
    def train(self) -> int:
        return self.gradients + self.activations + self.logits + self.batch

    @property
    def sample(self) -> int:
        return self.kv_cache + self.sampling

    @property
    def peak(self) -> int:
        return self.resident + max(self.train, self.sample)

    @property
    def resident(self) -> int:
        """Held for the whole step: params, the KL reference and the optimizer state."""
        return self.params + self.reference + self.optimizer


@dataclasses.dataclass(frozen=True)
class MeshSizes:
    data: int
    fsdp: int
    tensor: int
    sequence: int

    def split(self, n: int, *axes: str) -> int:
        """n per device over `axes`; unsharded when they don't divide n (sharding.constrain)."""
        k = math.prod(getattr(self, a) for a in axes)
        return n // k if n % k == 0 else n


def mesh_sizes(mesh) -> MeshSizes:
    """The axis sizes of a run's mesh (a jax Mesh, or an AbstractMesh when planning)."""
    return MeshSizes(*(mesh.shape[a] for a in sharding.MESH_AXES))


def param_elements_per_device(mcfg: ModelConfig, amesh) -> int:
    try:
        specs = sharding.param_shardings_specs(models.logical_axes(mcfg), models.param_shapes(mcfg), amesh)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    shapes = jax.tree.leaves(models.param_shapes(mcfg))
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    total = 0
    for shape, spec in zip(shapes, spec_leaves):
        n = 1
        for i, dim in enumerate(shape.shape):
            entry = spec[i] if i < len(spec) else None
            n *= dim // sharding.mesh_axis_size(amesh, entry)
        total += n
    return total


def layer_tokens(mcfg: ModelConfig, m: MeshSizes) -> tuple[int, int]:
    """(elements a layer keeps per token with no remat, elements per token under remat='dots')."""
    D, H = mcfg.hidden_size, mcfg.head_dim
    NH = m.split(mcfg.num_heads, "tensor") * H
    KH = m.split(mcfg.num_kv_heads, "tensor") * H
    F = m.split(mcfg.intermediate_size, "tensor")
    # x, norm(x), q, k, v, roped q/k, attention out, residual, norm, gate, up, act, mlp out
    full = 6 * D + 3 * NH + 3 * KH + 3 * F
    dots = NH + 2 * KH + 2 * D + 2 * F  # matmul outputs: q k v, o-proj, gate up, down
    return full, dots


def train_memory(mcfg: ModelConfig, m: MeshSizes, rows: int, W: int) -> tuple[int, int]:
    """(activations, logits) bytes per device for forward+backward of `rows` packed rows of W."""
    cb = 2 if mcfg.dtype in ("bfloat16", "float16") else 4
    L, V = mcfg.num_layers, m.split(mcfg.vocab_size, "tensor")
    rows_d = m.split(rows, "data", "fsdp")
    W_d = m.split(W, "sequence")
    T = rows_d * W_d  # tokens per device
    N_d = m.split(mcfg.num_heads, "tensor")
    full, dots = layer_tokens(mcfg, m)
    xla = mcfg.attention_impl == "xla"
    scores = rows_d * N_d * W_d * W if xla else 0  # [rows, heads, W, W] elements
    lse = rows_d * N_d * W_d * 4  # flash/ring keep the log-sum-exp
    norm32 = 2 * mcfg.hidden_size * 4  # the float32 RMSNorm copies
    saved_layer = {  # bytes a layer keeps for the backward pass
        "none": T * (full * cb + norm32) + (8 * scores if xla else lse),  # scores + probs, f32
        "dots": T * dots * cb + 4 * scores + (0 if xla else lse),
        "dots_no_batch": T * dots * cb + (0 if xla else lse),
        "full": T * mcfg.hidden_size * cb,  # the layer input only
    }[mcfg.remat]
    # One layer live in full during its backward (recomputed under remat): activations, and
    # scores, probabilities and their gradient for xla attention.
    working = T * (full * cb + norm32) + 12 * scores
    activations = L * saved_layer + working
    C = min(mcfg.logits_chunk, T)
    # One f32 [chunk, vocab] buffer (XLA:TPU fuses the chunk's softmax and its gradient into
    # it; three were assumed before the compile check) + the gathered hidden states.
    logits = C * V * 4 + 2 * T * mcfg.hidden_size * cb
    return activations, logits


def sample_memory(mcfg: ModelConfig, m: MeshSizes, B: int, G: int, S: int, R: int, n_param: int = 0) -> tuple[int, int]:
    """(kv_cache, sampling work) bytes per device for B prompts of S tokens, G x R new tokens;
    n_param: parameter elements per device (their compute-dtype copy is sampling work)."""
    cb = 2 if mcfg.dtype in ("bfloat16", "float16") else 4
    L, H = mcfg.num_layers, mcfg.head_dim
    B_d = m.split(B, *decode.SAMPLER_RULES["batch"])  # the sampler's layout
    K_d = m.split(mcfg.num_kv_heads, "tensor")
    N_d = m.split(mcfg.num_heads, "tensor")
    kv = 2 * L * B_d * (S + G * R) * K_d * H * cb
    C = min(PREFILL_CHUNK, S)
    D, F = mcfg.hidden_size, m.split(mcfg.intermediate_size, "tensor")
    # The chunked prefill (sampling/prompt_cache.chunk_attention) is the same jnp code for every
    # model.attention_impl: a chunk's f32 scores [B, N, C, S] and a quarter copy more (XLA fuses
    # the softmax into its neighbours in part: 1.25-2 copies measured on CPU, 1.25 used).
    scores = 5 * B_d * N_d * C * S
    prefill = scores + B_d * C * (2 * D + 2 * F) * cb
    V = mcfg.vocab_size  # decode logits are not vocab-sharded after the sampling softmax
    # flash-decoding (sampling/decode_attention.py): f32 scores of one prompt and one response block
    blocks = min(S, decode_attention.PROMPT_BLOCK) + decode_attention.response_block(R)
    decode_b = 3 * B_d * G * V * 4 + 2 * 4 * B_d * G * N_d * blocks
    # The parameters are cast to the compute dtype once for the whole sampling call (measured
    # by the compile check on v5p). XLA:TPU also keeps part of a second prompt-KV copy (the
    # prefill scan's output): not modelled, as XLA:CPU does not; the estimate is 6-15% low on
    # the 32B phases, more for longer prompts.
    cast = n_param * cb if mcfg.param_dtype != mcfg.dtype else 0
    return kv, max(prefill, decode_b) + cast
