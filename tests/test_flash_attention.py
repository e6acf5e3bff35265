"""Pallas flash attention (interpret mode on CPU, compiled on a GPU or TPU) against the plain-jnp reference.

Tolerances (max abs error, inputs ~N(0,1)): f32 forward 1e-5, f32 dq/dk/dv 1e-4; bf16 inputs vs
the f32 reference on the same bf16-rounded values: forward 3e-2, gradients 6e-2 (bf16 has an
8-bit mantissa and p is rounded to bf16 before p@v in both kernel and reference).
Each case compiles one interpret-mode program (the slow part), so the sweep is a list of cases
that together cover: batch 1/2, lengths that are not block multiples, T != S, head dims 64/128,
GQA ratios 1/2/4/8, causal and not, packed segment ids, the shared-prefix GRPO layout, bf16.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.block_mask import MaskSpec, block_schedule
from kernels.block_sizes import FlashStatic, block_sizes
from kernels.flash import flash_attention, flash_forward, pad_inputs
from kernels.reference import attention_mask, reference_attention
from tests.kernel_cases import INTERPRET, KERNELS_HERE

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@dataclasses.dataclass(frozen=True)
class Case:
    B: int
    T: int
    S: int
    N: int
    K: int
    H: int
    causal: bool
    layout: str = "none"  # none | packed | prefix
    block_q: int | None = 32
    block_k: int | None = 32
    dtype: str = "float32"


CASES = [
    Case(B=2, T=72, S=200, N=4, K=4, H=64, causal=True),  # queries are the last T keys
    Case(B=1, T=77, S=130, N=8, K=1, H=128, causal=False, block_q=None, block_k=None),
    Case(B=1, T=150, S=150, N=4, K=2, H=64, causal=True, layout="packed"),
    Case(B=2, T=160, S=160, N=8, K=2, H=64, causal=True, layout="prefix", block_k=64),
    Case(B=1, T=96, S=96, N=4, K=2, H=64, causal=True, layout="prefix", dtype="bfloat16"),
]


def segment_ids(layout: str, B: int, T: int, pad: bool = True):
    """Packed: 3 documents then padding. Prefix: [prompt | resp_1 | resp_2 | resp_3 | pad]."""
    rows = []
    for b in range(B):
        cut = np.sort(np.random.default_rng(b).choice(np.arange(8, T - 8), 4, replace=False))
        row = np.zeros(T, np.int32)
        if layout == "packed":
            row[: cut[0]], row[cut[0] : cut[1]], row[cut[1] : cut[3]] = 1, 2, 3
        else:
            row[: cut[0]], row[cut[0] : cut[1]], row[cut[1] : cut[2]], row[cut[2] : cut[3]] = 1, 2, 3, 4
        if not pad:
            row[cut[3] :] = row[cut[3] - 1]
        rows.append(row)
    return jnp.asarray(np.stack(rows))


def make_inputs(c: Case, seed: int = 0):
    ks = jax.random.split(jax.random.key(seed), 4)
    dt = jnp.dtype(c.dtype)
    q = jax.random.normal(ks[0], (c.B, c.T, c.N, c.H)).astype(dt)
    k = jax.random.normal(ks[1], (c.B, c.S, c.K, c.H)).astype(dt)
    v = jax.random.normal(ks[2], (c.B, c.S, c.K, c.H)).astype(dt)
    ct = jax.random.normal(ks[3], (c.B, c.T, c.N, c.H)).astype(dt)
    kw = dict(causal=c.causal)
    if c.layout != "none":
        assert c.T == c.S
        seg = segment_ids(c.layout, c.B, c.T)
        kw.update(
            q_segment_ids_BT=seg, kv_segment_ids_BS=seg, shared_prefix_segment=1 if c.layout == "prefix" else None
        )
    return (q, k, v), ct, kw


def out_and_grads(attn, args, ct):
    out, vjp = jax.vjp(attn, *args)
    return out, vjp(ct)


@pytest.mark.parametrize("kernel", KERNELS_HERE)
@pytest.mark.parametrize(
    "c",
    CASES,
    ids=lambda c: f"{c.layout}-H{c.H}-G{c.N // c.K}-{'causal' if c.causal else 'full'}-T{c.T}S{c.S}-{c.dtype}",
)
def test_flash_matches_reference(c: Case, kernel: str):
    """Both kernel shapes in interpret mode on CPU; on a GPU or TPU its own, compiled."""
    args, ct, kw = make_inputs(c)
    flash = jax.jit(
        lambda *a: out_and_grads(
            lambda q, k, v: flash_attention(
                q, k, v, block_q=c.block_q, block_k=c.block_k, interpret=INTERPRET, kernel=kernel, **kw
            ),
            a,
            ct,
        ),
        compiler_options=FAST_COMPILE,
    )
    out, grads = flash(*args)
    f32 = [x.astype(jnp.float32) for x in args]
    ref_out, ref_grads = jax.jit(
        lambda *a: out_and_grads(lambda q, k, v: reference_attention(q, k, v, **kw), a, ct.astype(jnp.float32))
    )(*f32)
    fwd_tol, grad_tol = (1e-5, 1e-4) if c.dtype == "float32" else (3e-2, 6e-2)
    assert out.dtype == args[0].dtype and out.shape == args[0].shape
    np.testing.assert_allclose(out.astype(jnp.float32), ref_out, atol=fwd_tol, rtol=0)
    for name, g, r in zip("qkv", grads, ref_grads):
        assert g.dtype == args[0].dtype
        np.testing.assert_allclose(g.astype(jnp.float32), r, atol=grad_tol, rtol=0, err_msg=f"d{name}")


def test_block_schedule_is_exact_and_kernel_follows_it():
    """The kernel computes exactly the blocks `block_schedule` lists, and those are exactly the
    blocks with a visible pair in the dense mask (shared-prefix layout without padding, causal).

    With trailing padding (id 0 after higher ids) a block's [min, max] range is not tight and a
    boundary block can be computed needlessly; the next test checks that case stays safe."""
    B, T, N, K, H, bq, bk = 2, 192, 2, 1, 64, 32, 32
    seg = segment_ids("prefix", B, T, pad=False)
    spec = MaskSpec(causal=True, q_len=T, kv_len=T, has_segments=True, shared_prefix_segment=1)
    static = FlashStatic(mask=spec, sm_scale=H**-0.5, block_q=bq, block_k=bk, interpret=True)
    ks = jax.random.split(jax.random.key(1), 3)
    q = jax.random.normal(ks[0], (B, T, N, H))
    k, v = (jax.random.normal(x, (B, T, K, H)) for x in ks[1:])
    padded = pad_inputs(static, q, k, v, seg, seg)
    counts_BNQ = jax.jit(lambda *a: flash_forward(static, *a, count_blocks=True)[2], compiler_options=FAST_COMPILE)(
        *padded
    )
    dense = np.asarray(
        attention_mask(T, T, causal=True, q_segment_ids_BT=seg, kv_segment_ids_BS=seg, shared_prefix_segment=1)
    )
    nq, nk = T // bq, T // bk
    total_computed = 0
    for b in range(B):
        sched = block_schedule(spec, bq, bk, np.asarray(seg[b]), np.asarray(seg[b]))
        any_visible = dense[b, 0].reshape(nq, bq, nk, bk).any(axis=(1, 3))
        np.testing.assert_array_equal(sched, any_visible)
        for n in range(N):
            np.testing.assert_array_equal(np.asarray(counts_BNQ[b, n]), sched.sum(axis=1))
        total_computed += sched.sum()
    causal_blocks = B * nq * (nq + 1) // 2
    assert total_computed < causal_blocks  # segments skip blocks beyond what causality skips


def test_block_schedule_never_skips_a_visible_block():
    """Conservative for arbitrary (non-contiguous) segment ids, T != S, with and without prefix."""
    rng = np.random.default_rng(0)
    T, S = 70, 110  # fixed shapes: the eager reference mask compiles once
    for trial in range(12):
        q_seg, kv_seg = rng.integers(0, 4, T), rng.integers(0, 4, S)
        prefix = None if trial % 2 else 1
        causal = trial % 3 != 0
        spec = MaskSpec(causal=causal, q_len=T, kv_len=S, has_segments=True, shared_prefix_segment=prefix)
        sched = block_schedule(spec, 16, 16, q_seg, kv_seg)
        dense = np.asarray(
            attention_mask(
                T,
                S,
                causal=causal,
                q_segment_ids_BT=q_seg[None],
                kv_segment_ids_BS=kv_seg[None],
                shared_prefix_segment=prefix,
            )
        )[0, 0]
        dense = np.pad(dense, ((0, -T % 16), (0, -S % 16)))
        any_visible = dense.reshape(-(-T // 16), 16, -(-S // 16), 16).any(axis=(1, 3))
        assert not (any_visible & ~sched).any()


def test_block_size_validation():
    with pytest.raises(ValueError, match="block_q=12"):
        block_sizes(100, 100, 12, None, "cpu")
    with pytest.raises(ValueError, match="block_k=0"):
        block_sizes(100, 100, None, 0, "cpu")
    with pytest.raises(ValueError, match="power of two"):
        block_sizes(100, 100, 48, None, "gpu")
    with pytest.raises(ValueError, match="multiple of 128"):
        block_sizes(100, 100, None, 64, "tpu")
    assert block_sizes(20, 300, None, None, "cpu") == block_sizes(20, 300, 24, 128, "cpu")
    assert block_sizes(20, 300, None, None, "gpu").block_q == 32


def test_input_validation():
    q, k = jnp.zeros((1, 8, 3, 16)), jnp.zeros((1, 8, 2, 16))
    with pytest.raises(ValueError, match="multiple of kv heads"):
        flash_attention(q, k, k)
    q = jnp.zeros((1, 8, 4, 16))
    with pytest.raises(ValueError, match="given together"):
        flash_attention(q, k, k, q_segment_ids_BT=jnp.zeros((1, 8), jnp.int32))
    with pytest.raises(ValueError, match="needs segment ids"):
        flash_attention(q, k, k, shared_prefix_segment=1)
    with pytest.raises(ValueError, match="dtypes differ"):
        flash_attention(q, k.astype(jnp.bfloat16), k)


@pytest.mark.parametrize("platform,backend", [("cuda", "gpu"), ("tpu", "tpu")])
def test_lowers_for_accelerators(monkeypatch, platform, backend):
    """Forward+backward with segments and the shared prefix lower (Pallas -> Triton / Mosaic
    MLIR) for GPU and TPU from this CPU machine. Lowering only: nothing is compiled or run."""
    import kernels.backend

    monkeypatch.setattr(kernels.backend, "target_backend", lambda: backend)
    q = jax.ShapeDtypeStruct((2, 256, 4, 64), jnp.bfloat16)
    kv = jax.ShapeDtypeStruct((2, 256, 2, 64), jnp.bfloat16)
    seg = jax.ShapeDtypeStruct((2, 256), jnp.int32)

    def fwd_bwd(q, k, v, seg):
        def attn(q, k, v):
            return flash_attention(q, k, v, q_segment_ids_BT=seg, kv_segment_ids_BS=seg, shared_prefix_segment=1)

        return out_and_grads(attn, (q, k, v), q.astype(q.dtype))

    hlo = jax.jit(fwd_bwd).trace(q, kv, kv, seg).lower(lowering_platforms=(platform,)).as_text()
    kernel_marker = {"cuda": "custom_call @__gpu$xla.gpu.triton", "tpu": "custom_call @tpu_custom_call"}[platform]
    assert hlo.count(kernel_marker) == 3, hlo[:2000]  # fwd, dq, dkdv


def test_triton_launch_parameters_reach_the_kernels():
    """`backend.use_triton` (what `bench kernels --tune` sweeps) sets num_warps and num_stages of
    the Triton kernels traced inside it, and only those."""
    import re

    from kernels import backend

    q = jax.ShapeDtypeStruct((1, 128, 2, 64), jnp.bfloat16)

    def params(hlo):
        return sorted(set(re.findall(r"num_(?:warps|stages) = \d+", hlo)))

    def lowered():
        with backend.use_target("gpu"):
            return jax.jit(lambda q: flash_attention(q, q, q)).trace(q).lower(lowering_platforms=("cuda",)).as_text()

    with backend.use_triton(8, 3):
        assert params(lowered()) == ["num_stages = 3", "num_warps = 8"]
    assert params(lowered()) == ["num_stages = 2", "num_warps = 4"]  # the default, outside it


def test_explicitly_sharded_inputs_stay_sharded():
    """Batch over `data`, heads over `tensor` (explicit axes, 8 fake devices): the kernel runs
    per shard (no gather), output keeps the sharding, values and grads match the reference."""
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    mesh = jax.make_mesh((2, 4), ("data", "tensor"), axis_types=(AxisType.Explicit,) * 2)
    c = Case(B=2, T=64, S=64, N=8, K=4, H=64, causal=True, layout="packed")
    (q, k, v), ct, kw = make_inputs(c)

    def put(x, *spec):
        return jax.device_put(x, NamedSharding(mesh, P(*spec)))

    sharded = [put(x, "data", None, "tensor", None) for x in (q, k, v)]
    seg = put(kw["q_segment_ids_BT"], "data", None)
    kw_sharded = dict(kw, q_segment_ids_BT=seg, kv_segment_ids_BS=seg)
    out, grads = jax.jit(
        lambda *a: out_and_grads(
            lambda q, k, v: flash_attention(q, k, v, block_q=32, block_k=32, **kw_sharded),
            a,
            put(ct, "data", None, "tensor", None),
        ),
        compiler_options=FAST_COMPILE,
    )(*sharded)
    assert out.sharding.spec == P("data", None, "tensor", None)
    ref_out, ref_grads = jax.jit(lambda *a: out_and_grads(lambda q, k, v: reference_attention(q, k, v, **kw), a, ct))(
        q, k, v
    )
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=0)
    for name, g, r in zip("qkv", grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=0, err_msg=f"d{name}")


@pytest.mark.parametrize("layout,pad", [("prefix", False), ("prefix", True), ("packed", True), ("random", True)])
def test_grid_kernel_block_runs_cover_the_schedule(layout, pad):
    """The grid (TPU) kernel visits the blocks in at most two runs per row of blocks
    (kernels/block_runs.py `block_runs`, for the forward/dq and, transposed, for dk/dv). The runs
    must cover every block `block_schedule` computes, and for contiguous layouts (packed, the
    GRPO shared-prefix layout) contain nothing else: those blocks are then never fetched."""
    from kernels.block_runs import block_runs, visibility

    B, T, bq, bk = 2, 256, 32, 32
    if layout == "random":  # non-contiguous ids: runs are a superset, never miss a block
        seg = jnp.asarray(np.random.default_rng(0).integers(0, 4, (B, T)), jnp.int32)
    else:
        seg = segment_ids(layout, B, T, pad=pad)
    spec = MaskSpec(
        causal=True, q_len=T, kv_len=T, has_segments=True, shared_prefix_segment=1 if layout == "prefix" else None
    )
    static = FlashStatic(mask=spec, sm_scale=1.0, block_q=bq, block_k=bk, interpret=True, kernel="grid")
    vis = visibility(static, B, T // bq, T // bk, seg, seg)
    for transpose in (False, True):
        v = np.asarray(jnp.swapaxes(vis, 1, 2) if transpose else vis)
        lo1, len1, lo2, len2 = (np.asarray(x) for x in block_runs(jnp.asarray(v)))
        for b in range(B):
            sched = block_schedule(spec, bq, bk, np.asarray(seg[b]), np.asarray(seg[b]))
            sched = sched.T if transpose else sched
            np.testing.assert_array_equal(v[b], sched)
            for r in range(v.shape[1]):
                runs = np.zeros(v.shape[2], bool)
                runs[lo1[b, r] : lo1[b, r] + len1[b, r]] = True
                runs[lo2[b, r] : lo2[b, r] + len2[b, r]] = True
                assert not (sched[r] & ~runs).any(), (b, r, transpose)  # nothing visible missed
                if layout != "random":
                    np.testing.assert_array_equal(runs, sched[r])  # exact: nothing else fetched
