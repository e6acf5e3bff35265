"""Sharded forward on 8 fake CPU devices equals single-device forward; layout errors are clear."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from qwenlong_jax import models
from qwenlong_jax.parallel import sharding
from qwenlong_jax.parallel.sharding import MeshConfig

CFG = models.get_model_config(
    "tiny",
    vocab_size=256,
    num_heads=8,
    num_kv_heads=4,
    hidden_size=64,
    head_dim=16,
    intermediate_size=128,
    num_layers=2,
)


@pytest.mark.parametrize(
    "mesh_cfg,expect_q",
    [
        (MeshConfig(data=2, fsdp=2, tensor=2), P(None, "fsdp", "tensor", None)),
        (MeshConfig(data=1, fsdp=2, tensor=4), P(None, "fsdp", "tensor", None)),
        (MeshConfig(data=8), P(None, "fsdp", "tensor", None)),  # size-1 axes: replicated
    ],
)
def test_sharded_forward_equals_single_device(mesh_cfg, expect_q):
    assert len(jax.devices()) == 8
    params = models.init_params(CFG, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (8, 16), 0, CFG.vocab_size)
    seg = jnp.ones((8, 16), jnp.int32).at[3, 10:].set(0)
    ref = jax.jit(lambda p, t, s: models.forward(CFG, p, t, segment_ids_BT=s))(params, tokens, seg)

    mesh = sharding.make_mesh(mesh_cfg)
    p_shard = sharding.param_shardings(models.logical_axes(CFG), models.param_shapes(CFG), mesh)
    b_shard = sharding.named(mesh, "batch", "length")
    out_shard = sharding.named(mesh, "batch", "length", "vocab")
    params_s = jax.device_put(params, p_shard)
    fwd = jax.jit(
        lambda p, t, s: models.forward(CFG, p, t, segment_ids_BT=s),
        in_shardings=(p_shard, b_shard, b_shard),
        out_shardings=out_shard,
    )
    with jax.set_mesh(mesh):
        out = fwd(params_s, jax.device_put(tokens, b_shard), jax.device_put(seg, b_shard))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5, rtol=0)
    assert params_s["layers"]["q"].sharding.spec == expect_q
    assert out.sharding.spec == out_shard.spec
    assert params_s["layers"]["q"].sharding.is_fully_replicated == (mesh_cfg.tensor * mesh_cfg.fsdp == 1)
    if mesh_cfg.tensor > 1:
        assert params_s["embed"].sharding.spec == P("tensor", "fsdp")
        assert params_s["layers"]["down"].sharding.spec == P(None, "tensor", "fsdp")


def test_mesh_size_mismatch_is_refused():
    with pytest.raises(ValueError, match=r"= 16 does not match the 8 available devices; change mesh"):
        sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=4))


def test_indivisible_dimension_is_refused():
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=1, tensor=8))
    msg = r"params\['layers'\]\['k'\]: dimension kv_heads=4 is not divisible by mesh axis tensor=8"
    with pytest.raises(ValueError, match=msg):
        sharding.param_shardings(models.logical_axes(CFG), models.param_shapes(CFG), mesh)


def test_batch_not_divisible():
    mesh = sharding.abstract_mesh(MeshConfig(data=4, fsdp=2), 8)
    with pytest.raises(ValueError, match=r"train batch: dimension batch=12 is not divisible by mesh axis data\*fsdp=8"):
        sharding.check_layout({}, {}, mesh, {"train batch": 12})
