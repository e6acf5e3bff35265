"""TrainState, the optimizer, and the one optimizer-update routine every step uses.

    state = TrainState.create(params, tx)
    state, metrics = apply_update(state, tx, loss_fn, micro_batches)   # inside a jitted step

`apply_update` accumulates gradients over micro-batches (lax.scan, weighted), clips, applies
AdamW, and skips the update (params and optimizer state unchanged) when the loss or the gradient
is not finite, counting it, or when the caller says there is nothing to learn from (`apply`).
The learning rate lives in the optimizer state (optax.inject_hyperparams)
so phases change it without recompiling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
    # The frozen reference policy of the KL term (rl.kl_coef > 0), None otherwise. Kept in the
    # state so that checkpoints carry it: a resumed phase keeps its starting policy.
    ref_params: Any = None

    if TYPE_CHECKING:  # flax.struct.dataclass adds replace(); declared for the type checker

        def replace(self, **changes: Any) -> TrainState: ...

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation) -> TrainState:
        def zero():  # distinct buffers: the state is donated
            return jnp.zeros((), jnp.int32)

        return cls(
            step=zero(), params=params, opt_state=tx.init(params), nonfinite_in_a_row=zero(), nonfinite_total=zero()
        )


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
    hp["learning_rate"] = jax.device_put(new, old.sharding) if isinstance(old, jax.Array) else jnp.asarray(new)
    return state.replace(opt_state=(clip_state, adam_state._replace(hyperparams=hp)))


def current_lr(state: TrainState) -> jax.Array:
    return state.opt_state[1].hyperparams["learning_rate"]


LossFn = Callable[[Any, Any], tuple[jax.Array, dict]]


def apply_update(
    state: TrainState,
    tx: optax.GradientTransformation,
    loss_fn: LossFn,
    micro_batches: Any,
    weights_U: jax.Array | None = None,
    apply: jax.Array | None = None,
    max_keys: tuple[str, ...] = (),
) -> tuple[TrainState, dict]:
    """One optimizer update from the weighted sum of the micro-batches' gradients.

    loss_fn(params, micro_batch) -> (loss, stats). `weights_U` weighs micro-batch u's loss,
    gradient and stats (default 1/U each, plain gradient accumulation); callers pass
    e.g. each micro-batch's share of the real tokens so that padding never dilutes a gradient.
    `apply` (bool scalar, default True): False leaves the whole state bitwise unchanged (params,
    optimizer state, step count) and reports `empty` = 1 -- an update with nothing to learn from
    must not move AdamW's moments nor decay the weights.
    Stats are the weighted sums over micro-batches, except those named in `max_keys` (e.g. a
    maximum): their largest value over the micro-batches.
    """
    num_micro = jax.tree.leaves(micro_batches)[0].shape[0]
    if weights_U is None:
        weights_U = jnp.full((num_micro,), 1.0 / num_micro, jnp.float32)
    apply = jnp.asarray(True) if apply is None else jnp.asarray(apply, bool)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulate(grads_acc, xs):
        mb, w = xs
        (loss, stats), grads = grad_fn(state.params, mb)
        grads_acc = jax.tree.map(lambda a, g: a + w * g.astype(a.dtype), grads_acc, grads)
        return grads_acc, (loss, stats)

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    grads, (losses, stats) = jax.lax.scan(accumulate, zeros, (micro_batches, weights_U))

    def wsum(v):
        return jnp.sum(weights_U.reshape((-1,) + (1,) * (v.ndim - 1)) * v, axis=0)

    loss = wsum(losses)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    take = finite & apply
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)

    def keep(new, old):
        return jax.tree.map(lambda n, o: jnp.where(take, n, o), new, old)

    skipped = (apply & ~finite).astype(jnp.int32)  # non-finite (an empty update is not one)
    new_state = state.replace(
        step=state.step + take.astype(jnp.int32),
        params=keep(new_params, state.params),
        opt_state=keep(new_opt, state.opt_state),
        nonfinite_in_a_row=jnp.where(
            apply, jnp.where(finite, 0, state.nonfinite_in_a_row + 1), state.nonfinite_in_a_row
        ),
        nonfinite_total=state.nonfinite_total + skipped,
    )
    metrics = {k: (jnp.max(v, axis=0) if k in max_keys else wsum(v)) for k, v in stats.items()}
    metrics.update(
        loss=loss, grad_norm=grad_norm, skipped=skipped, lr=current_lr(state), empty=(~apply).astype(jnp.int32)
    )
    return new_state, metrics
