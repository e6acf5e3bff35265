"""Sampling on 8 fake devices (params over fsdp/tensor, prompts over data) equals one device."""
import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from qwenlong_jax import models, sampling, sharding
from qwenlong_jax.sharding import MeshConfig

CFG = models.get_model_config("tiny", vocab_size=64, num_layers=2)  # N=4, K=2: tensor=2 divides
PARAMS = jax.jit(models.init_params, static_argnums=(0, 2))(CFG, jax.random.key(0), 0.2)
PROMPTS = [np.random.default_rng(3).integers(1, 64, size=n).tolist() for n in (30, 17, 25)]
MESH_CFG = MeshConfig(data=2, fsdp=2, tensor=2)


def test_sharded_generate_equals_single_device():
    assert len(jax.devices()) == 8
    kwargs = dict(max_new_tokens=10, temperature=1.0, top_k=20, num_samples=2, seed=3,
                  prefill_chunk=16)
    ref = sampling.generate(CFG, PARAMS, PROMPTS, **kwargs)
    # 3 prompts on a batch axis of data*fsdp = 4: generate pads with a filler row.
    out = sampling.generate(CFG, PARAMS, PROMPTS, mesh=sharding.make_mesh(MESH_CFG), **kwargs)
    for i in range(len(PROMPTS)):
        for g in range(2):
            assert out[i][g].tokens == ref[i][g].tokens
            np.testing.assert_allclose(out[i][g].logprobs, ref[i][g].logprobs, atol=1e-5)
    assert ref[0][0].tokens != ref[0][1].tokens


def test_prompt_cache_is_sharded_over_batch_and_kv_heads():
    mesh = sharding.make_mesh(MESH_CFG)
    p_shard = sharding.param_shardings(models.logical_axes(CFG), models.param_shapes(CFG), mesh)
    tokens, lens = sampling.pad_prompts(PROMPTS + PROMPTS[:1], 32)
    batch = sharding.named(mesh, "batch", None)
    run = jax.jit(lambda p, t, n: sampling.prefill(CFG, p, t, n, chunk=16))
    with jax.set_mesh(mesh):
        cache = run(jax.device_put(PARAMS, p_shard), jax.device_put(tokens, batch),
                    jax.device_put(lens, sharding.named(mesh, "batch")))
    want = jax.sharding.NamedSharding(mesh, P(None, ("data", "fsdp"), None, "tensor", None))
    assert cache.k_LBSKH.sharding.is_equivalent_to(want, 5), cache.k_LBSKH.sharding
    # Each device holds a quarter of the prompts and half of the kv heads: 1/8 of the cache.
    shard = cache.k_LBSKH.addressable_shards[0].data
    assert shard.size * 8 == cache.k_LBSKH.size
