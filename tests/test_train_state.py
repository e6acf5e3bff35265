"""apply_update: averaged micro-batch gradients, AdamW step, and a skipped non-finite update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from qwenlong_jax.config import OptimConfig
from qwenlong_jax.run.train_state import TrainState, apply_update, current_lr, make_optimizer, with_lr


def _loss(params, mb):
    loss = jnp.mean((params["w"] * mb["x"] - mb["y"]) ** 2)
    return loss, {"l": loss}


def test_update_equals_optax_on_the_mean_gradient():
    tx = make_optimizer(OptimConfig(lr=0.1, weight_decay=0.01, grad_clip=100.0))
    state = TrainState.create({"w": jnp.array([1.0, -2.0])}, tx)
    mbs = {"x": jnp.array([[1.0, 2.0], [3.0, -1.0]]), "y": jnp.array([[0.5, 0.0], [1.0, 2.0]])}
    new, m = jax.jit(lambda s, b: apply_update(s, tx, _loss, b))(state, mbs)
    g = jax.tree.map(
        lambda *a: sum(a) / 2,
        *[jax.grad(lambda p, i=i: _loss(p, {k: v[i] for k, v in mbs.items()})[0])(state.params) for i in range(2)],
    )
    ref_tx = optax.adamw(0.1, weight_decay=0.01)
    upd, _ = ref_tx.update(g, ref_tx.init(state.params), state.params)
    np.testing.assert_allclose(new.params["w"], optax.apply_updates(state.params, upd)["w"], rtol=1e-6)
    assert int(new.step) == 1 and int(m["skipped"]) == 0


def test_nonfinite_update_is_skipped_and_counted():
    tx = make_optimizer(OptimConfig(lr=0.1))
    state = TrainState.create({"w": jnp.array([1.0, -2.0])}, tx)
    bad = {"x": jnp.array([[jnp.nan, 1.0]]), "y": jnp.array([[0.0, 0.0]])}
    new, m = apply_update(state, tx, _loss, bad)
    assert int(m["skipped"]) == 1
    assert int(new.step) == 0 and int(new.nonfinite_in_a_row) == 1 and int(new.nonfinite_total) == 1
    for a, b in zip(
        jax.tree.leaves(new.params) + jax.tree.leaves(new.opt_state),
        jax.tree.leaves(state.params) + jax.tree.leaves(state.opt_state),
    ):
        np.testing.assert_array_equal(a, b)  # nothing moved, optimizer moments included
    good = {"x": jnp.array([[1.0, 1.0]]), "y": jnp.array([[0.0, 0.0]])}
    newer, _ = apply_update(new, tx, _loss, good)
    assert int(newer.nonfinite_in_a_row) == 0 and int(newer.nonfinite_total) == 1 and int(newer.step) == 1


def test_with_lr_sets_the_learning_rate():
    tx = make_optimizer(OptimConfig(lr=0.1))
    state = with_lr(TrainState.create({"w": jnp.zeros(2)}, tx), 0.025)
    assert float(current_lr(state)) == np.float32(0.025)
