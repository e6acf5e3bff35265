"""The step-time model's counts against programs counted by hand (qwenlong_jax/capacity/)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from qwenlong_jax.capacity import targets
from qwenlong_jax.capacity.chips import CHIPS, chip_for
from qwenlong_jax.capacity.cost import Cost, estimate
from qwenlong_jax.capacity.hlo_cost import analyze

# A hand-written module: a 10-trip loop of [8,16]x[16,16] matmuls that also writes one row of a
# [10,16] buffer per step in place, a padded convolution, an all-reduce and a copy into VMEM.
HLO = """HloModule hand_counted

%dus (b: f32[10,16], r: f32[1,16], i: s32[]) -> f32[10,16] {
  %b = f32[10,16]{1,0} parameter(0)
  %r = f32[1,16]{1,0} parameter(1)
  %i = s32[] parameter(2)
  %z = s32[] constant(0)
  ROOT %u = f32[10,16]{1,0} dynamic-update-slice(%b, %r, %i, %z)
}

%body (p: (s32[], f32[8,16], f32[16,16], f32[10,16])) -> (s32[], f32[8,16], f32[16,16], f32[10,16]) {
  %p = (s32[], f32[8,16]{1,0}, f32[16,16]{1,0}, f32[10,16]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %x = f32[8,16]{1,0} get-tuple-element(%p), index=1
  %w = f32[16,16]{1,0} get-tuple-element(%p), index=2
  %buf = f32[10,16]{1,0} get-tuple-element(%p), index=3
  %y = f32[8,16]{1,0} dot(%x, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %row = f32[1,16]{1,0} slice(%y), slice={[0:1], [0:16]}
  %buf2 = f32[10,16]{1,0} fusion(%buf, %row, %i), kind=kLoop, calls=%dus
  %one = s32[] constant(1)
  %i2 = s32[] add(%i, %one)
  ROOT %t = (s32[], f32[8,16]{1,0}, f32[16,16]{1,0}, f32[10,16]{1,0}) tuple(%i2, %y, %w, %buf2)
}

%cond (p: (s32[], f32[8,16], f32[16,16], f32[10,16])) -> pred[] {
  %p = (s32[], f32[8,16]{1,0}, f32[16,16]{1,0}, f32[10,16]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %n = s32[] constant(13)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

ENTRY %main (x: f32[8,16], w: f32[16,16], buf: f32[10,16], a: f32[1,4,3], k: f32[3,3,2], g: f32[256], v: f32[64]) -> f32[8,16] {
  %x = f32[8,16]{1,0} parameter(0)
  %w = f32[16,16]{1,0} parameter(1)
  %buf = f32[10,16]{1,0} parameter(2)
  %a = f32[1,4,3]{2,1,0} parameter(3)
  %k = f32[3,3,2]{2,1,0} parameter(4)
  %g = f32[256]{0} parameter(5)
  %v = f32[64]{0} parameter(6)
  %start = s32[] constant(3)
  %init = (s32[], f32[8,16]{1,0}, f32[16,16]{1,0}, f32[10,16]{1,0}) tuple(%start, %x, %w, %buf)
  %loop = (s32[], f32[8,16]{1,0}, f32[16,16]{1,0}, f32[10,16]{1,0}) while(%init), condition=%cond, body=%body
  %conv = f32[1,4,2]{2,1,0} convolution(%a, %k), window={size=3 pad=1_1}, dim_labels=b0f_0io->b0f
  %sum = f32[256]{0} all-reduce(%g), replica_groups={}, to_apply=%add
  %vm = f32[64]{0:S(1)} copy(%v)
  ROOT %out = f32[8,16]{1,0} get-tuple-element(%loop), index=1
}
"""


def test_hand_counted_module():
    cost = analyze(HLO)
    trips = 13 - 3  # counter starts at 3 (the init tuple's constant), runs while < 13
    dot_flops = 2 * 8 * 16 * 16
    # per step: dot reads x, w and writes y; the slice reads and writes one row; the
    # in-place update reads the row and the index and writes one row (not the buffer);
    # the counter add reads two s32 and writes one; the condition's compare 4 + 4 -> 1 byte.
    per_step = (8 * 16 + 16 * 16 + 8 * 16) * 4 + 2 * 16 * 4 + (16 * 4 + 4 + 16 * 4) + 12 + 9
    # the convolution: 4 outputs x 3 taps, less the 2 taps in the padding = 10 taps, each a
    # 3 (in features) x 2 (out features) product.
    conv_flops = 2 * 10 * 3 * 2
    conv_bytes = (4 * 3 + 3 * 3 * 2 + 4 * 2) * 4
    allreduce_bytes = 2 * 256 * 4  # HBM: read + write; on the wire 2x the operand
    copy_to_vmem = 64 * 4  # the read from HBM; the VMEM result is free
    assert cost.flops == trips * dot_flops + conv_flops
    assert cost.hbm_bytes == trips * per_step + conv_bytes + allreduce_bytes + copy_to_vmem
    assert cost.collective_bytes == 2 * 256 * 4
    assert cost.assumed == []


def test_estimate_picks_the_dominant_bound():
    chip = CHIPS["v5p"]
    est = estimate(Cost(flops=459e12, hbm_bytes=2 * 2765e9, collective_bytes=0.0), chip)
    assert (est.compute_s, est.hbm_s, est.seconds, est.bound) == (1.0, 2.0, 2.0, "hbm")
    assert chip_for("v5p:4x4x4") is chip
    assert chip_for("NVIDIA H200") is CHIPS["h200"]
    assert chip_for("v4:2x2x1") is None


def test_jitted_loop_flops_multiplied_by_trip_count():
    """A jitted CPU program: a fori_loop of 7 matmuls, counted 7 times (cost_analysis: once)."""
    M, K = 32, 64

    def f(x, w):
        return jax.lax.fori_loop(0, 7, lambda i, x: jnp.tanh(x @ w), x)

    compiled = jax.jit(f).lower(jnp.ones((M, K)), jnp.ones((K, K))).compile()
    cost = analyze(compiled.as_text())
    assert cost.flops == 7 * 2 * M * K * K
    # every step reads x and w and writes x at least once
    assert cost.hbm_bytes >= 7 * (2 * M * K + K * K) * 4


def test_loop_bounded_by_an_outer_counter_counts_its_mean():
    """A loop whose bound is the outer loop's counter (a causal block loop) runs the counter's
    mean number of times, and the estimate says so."""

    def f(x):
        def outer(i, x):
            return jax.lax.fori_loop(0, i, lambda j, y: y @ y, x)

        return jax.lax.fori_loop(0, 9, outer, x)

    compiled = jax.jit(f).lower(jnp.ones((16, 16))).compile()
    cost = analyze(compiled.as_text())
    assert cost.flops == 9 * 4 * 2 * 16**3  # 9 outer steps x mean(0..8) = 4 inner steps
    assert len(cost.assumed) == 1 and "mean 4 trips" in cost.assumed[0]


def test_unknown_trip_count_is_assumed_and_said():
    """A loop whose bound is data (not a counter): the guess is used and reported."""

    def f(x, n):
        return jax.lax.fori_loop(0, n, lambda j, y: y @ y, x)

    compiled = jax.jit(f).lower(jnp.ones((16, 16)), 3).compile()
    cost = analyze(compiled.as_text(), unknown_trip=lambda name, outer: 5.0)
    assert cost.flops == 5 * 2 * 16**3
    assert len(cost.assumed) == 1 and "assumed 5" in cost.assumed[0]


@pytest.mark.skipif(not targets.libtpu_available(), reason="libtpu not installed")
def test_tpu_layer_scan_flops_exact():
    """XLA:TPU writes the matmuls as convolutions inside fusions; a 5-layer scan of
    [256,512]x[512,1024] then [256,1024]x[1024,512] counts 5 x both."""
    devices = targets.topology_devices("v5p:2x2x1")
    mesh = Mesh(np.array(devices[:1]), ("data",))
    L, T, D, F = 5, 256, 512, 1024

    def f(x, w1, w2):
        def layer(x, ws):
            return jnp.dot(jax.nn.relu(x @ ws[0]), ws[1]), None

        return jax.lax.scan(layer, x, (w1, w2))[0]

    sh = NamedSharding(mesh, P())
    args = (
        jax.ShapeDtypeStruct((T, D), jnp.bfloat16, sharding=sh),
        jax.ShapeDtypeStruct((L, D, F), jnp.bfloat16, sharding=sh),
        jax.ShapeDtypeStruct((L, F, D), jnp.bfloat16, sharding=sh),
    )
    with jax.set_mesh(mesh):
        compiled = jax.jit(f).trace(*args).lower().compile()
    cost = analyze(compiled.as_text())
    assert cost.flops == L * 2 * (2 * T * D * F)
    # the weights are read once per layer at least (2 bytes each)
    assert cost.hbm_bytes >= L * 2 * D * F * 2
