"""TrainState, the optimizer, and the one optimizer-update routine every step uses.

    state = TrainState.create(params, tx)
    state, metrics = apply_update(state, tx, loss_fn, micro_batches)   # inside a jitted step

`apply_update` accumulates gradients over micro-batches (lax.scan), clips, applies AdamW, and
skips the update (params and optimizer state unchanged) when the loss or the gradient is not
finite, counting it. The learning rate lives in the optimizer state (optax.inject_hyperparams)
so phases change it without recompiling.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from qwenlong_jax.config import OptimConfig


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # optimizer updates applied (skipped ones not counted)
    params: Any
    opt_state: Any
    nonfinite_in_a_row: jax.Array
    nonfinite_total: jax.Array

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation) -> "TrainState":
        zero = lambda: jnp.zeros((), jnp.int32)  # distinct buffers: the state is donated
        return cls(step=zero(), params=params, opt_state=tx.init(params), nonfinite_in_a_row=zero(),
                   nonfinite_total=zero())


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.inject_hyperparams(optax.adamw)(
            learning_rate=cfg.lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay
        ),
    )


def with_lr(state: TrainState, lr) -> TrainState:
    """The same state with the optimizer's learning rate set to `lr` (host or device scalar)."""
    clip_state, adam_state = state.opt_state
    hp = dict(adam_state.hyperparams)
    old = hp["learning_rate"]
    new = np.asarray(lr, dtype=old.dtype)
    # Keep the leaf's layout (replicated over the mesh): a single-device scalar would be a
    # host-local array that multi-host checkpointing cannot save.
    hp["learning_rate"] = (jax.device_put(new, old.sharding) if isinstance(old, jax.Array)
                           else jnp.asarray(new))
    return state.replace(opt_state=(clip_state, adam_state._replace(hyperparams=hp)))


def current_lr(state: TrainState) -> jax.Array:
    return state.opt_state[1].hyperparams["learning_rate"]


LossFn = Callable[[Any, Any], tuple[jax.Array, dict]]


def apply_update(state: TrainState, tx: optax.GradientTransformation, loss_fn: LossFn,
                 micro_batches: Any) -> tuple[TrainState, dict]:
    """One optimizer update from gradients averaged over the leading axis of `micro_batches`.

    loss_fn(params, micro_batch) -> (loss, stats). Each micro-batch's loss is weighted 1/U, as
    the reference does with gradient accumulation.
    """
    num_micro = jax.tree.leaves(micro_batches)[0].shape[0]
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulate(grads_acc, mb):
        (loss, stats), grads = grad_fn(state.params, mb)
        grads_acc = jax.tree.map(lambda a, g: a + g.astype(a.dtype) / num_micro, grads_acc, grads)
        return grads_acc, (loss, stats)

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    grads, (losses, stats) = jax.lax.scan(accumulate, zeros, micro_batches)
    loss = jnp.mean(losses)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    skipped = (~finite).astype(jnp.int32)
    new_state = state.replace(
        step=state.step + 1 - skipped,
        params=keep(new_params, state.params),
        opt_state=keep(new_opt, state.opt_state),
        nonfinite_in_a_row=jnp.where(finite, 0, state.nonfinite_in_a_row + 1),
        nonfinite_total=state.nonfinite_total + skipped,
    )
    metrics = {k: jnp.mean(v) for k, v in stats.items()}
    metrics.update(loss=loss, grad_norm=grad_norm, skipped=skipped, lr=current_lr(state))
    return new_state, metrics
