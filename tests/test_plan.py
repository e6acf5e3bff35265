"""Memory planner (qwenlong_jax/capacity/planner.py) against XLA's own numbers, and the 32B tables.

"Measured" here is XLA's buffer assignment of the compiled program on CPU,
`jax.jit(...).lower(...).compile().memory_analysis()`: peak = arguments + outputs - aliased
(donated) + temporaries. It is what XLA plans to have live at once, not a run-time reading
(the CPU backend reports no allocator peak). Two programs per RL phase, at the trainer's exact
shapes: the GRPO update (grpo_step.grpo_update, state donated) and the group sampler
(sampling.sample_groups). Compared with the planner's update total (params + optimizer +
gradients + activations + logits + inputs) and sampling total (params + KV cache + sampling
work; the sampler program does not hold the optimizer state).
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import pytest

import configs.default
import configs.smoke
from qwenlong_jax import models
from qwenlong_jax.capacity import planner
from qwenlong_jax.cli import plan as plan_cli
from qwenlong_jax.cli.config_files import load_config
from qwenlong_jax.config import from_config_dict
from qwenlong_jax.rl import grpo_step
from qwenlong_jax.run import step_shapes
from qwenlong_jax.run.spec import RunSpec
from qwenlong_jax.run.train_state import TrainState, make_optimizer
from qwenlong_jax.sampling import sampler, strategies

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sd = jax.ShapeDtypeStruct


def _peak(mem) -> int:
    return mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes


def measured(cfg, mcfg, phase) -> tuple[int, int]:
    """(update peak, sampler peak) bytes from XLA's memory analysis on one CPU device."""
    tx = make_optimizer(cfg.optim)
    state = jax.eval_shape(lambda: TrainState.create(models.init_params(mcfg, jax.random.key(0)), tx))
    s = dataclasses.asdict(step_shapes.rl_step_shapes(phase, cfg.rl))  # the trainer's shapes
    M, U, Bm, W, R, G = s["updates"], s["micro"], s["rows"], s["W"], s["R"], s["G"]
    batch = {k: sd((M, U, Bm, W), jnp.int32) for k in grpo_step.ROW_KEYS}
    batch.update(
        unpack_idx_NR=sd((M, U, Bm * G, R), jnp.int32),
        mask_NR=sd((M, U, Bm * G, R), jnp.float32),
        adv_N=sd((M, U, Bm * G), jnp.float32),
        old_logp_NR=sd((M, U, Bm * G, R), jnp.float32),
    )
    ls = grpo_step.LossSettings.from_rl(cfg.rl)
    update = jax.jit(lambda st, b: grpo_step.grpo_update(mcfg, ls, tx, st, b), donate_argnums=0)
    upd = update.lower(state, batch).compile().memory_analysis()
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), (s["sample_B"], G)))
    strategy = strategies.from_flags(cfg.rl.temperature, cfg.rl.top_p, cfg.rl.top_k, 0.0)
    smp = (
        sampler.sample_groups.lower(
            mcfg,
            state.params,
            sd((s["sample_B"], s["S"]), jnp.int32),
            sd((s["sample_B"],), jnp.int32),
            keys,
            max_new_tokens=R,
            strategy=strategy,
            eos_ids=(1,),
            prefill_chunk=step_shapes.PREFILL_CHUNK,
        )
        .compile()
        .memory_analysis()
    )
    return _peak(upd), _peak(smp)


# (config, overrides, phase): full remat on small rows (the 32B configs' policy), no remat on
# the largest tiny rows (8 groups x 1408 tokens, attention scores dominate). Each case costs
# ~20 s of CPU (compiling the update and the sampler), so two cases.
CASES = [("smoke", {"model.remat": "full"}, "rl_long"), ("default", {}, "rl_640")]


@pytest.mark.parametrize("name,overrides,phase", CASES, ids=[f"{n}-{p}{o or ''}" for n, o, p in CASES])
def test_estimate_within_25_percent_of_xla(name, overrides, phase):
    cd = {"smoke": configs.smoke, "default": configs.default}[name].get_config()
    for k, v in overrides.items():
        sec, key = k.split(".")
        cd[sec][key] = v
    cfg = from_config_dict(cd)
    mcfg = RunSpec.planned(cfg).mcfg
    pm = next(p for p in planner.estimate(RunSpec.planned(cfg, 1)) if p.phase == phase)
    upd, smp = measured(cfg, mcfg, next(ph for ph in cfg.phases if ph.name == phase))
    want_upd = pm.params + pm.optimizer + pm.train
    want_smp = pm.params + pm.sample
    print(
        f"{name}{overrides} {phase}: update est {want_upd / 2**20:.1f} MiB vs XLA {upd / 2**20:.1f}; "
        f"sampler est {want_smp / 2**20:.1f} MiB vs XLA {smp / 2**20:.1f}"
    )
    assert abs(want_upd - upd) <= 0.25 * upd, (want_upd, upd)
    assert abs(want_smp - smp) <= 0.25 * smp, (want_smp, smp)


# --- the 32B configs: a table on their real meshes, and a refusal that names a knob ----------

BIG = [("r1_distill_32b_tpu.py", 64, 95), ("r1_distill_32b_gpu.py", 128, 80)]


@pytest.mark.parametrize("name,devices,hbm_gib", BIG)
def test_32b_tables(name, devices, hbm_gib, capsys):
    path = os.path.join(REPO, "configs", name)
    rc = plan_cli.main(["--config", path, "--devices", str(devices), "--hbm_gib", str(hbm_gib)])
    out = capsys.readouterr().out
    assert rc == 0, out  # the shipped layouts fit (micro-batches, sequence sharding, rollout chunks)
    for label in ("params", "optimizer", "activations", "kv cache", "PEAK", "sft", "rl_20k", "rl_60k"):
        assert label in out
    cfg = load_config(path)
    mcfg = RunSpec.planned(cfg, devices).mcfg
    assert abs(mcfg.num_params - 32.76e9) < 0.01e9
    phases = planner.estimate(RunSpec.planned(cfg, devices))
    # Params are sharded over fsdp x tensor and replicated over sequence (norms and biases
    # partly replicated: < 0.2%).
    assert phases[0].params == pytest.approx(mcfg.num_params * 4 / (devices // cfg.mesh.sequence), rel=2e-3)
    assert phases[0].optimizer == 2 * phases[0].params
    # KV cache by hand: each prompt's KV once + G responses, prompts over data*fsdp*sequence
    # (the sampler's layout), KV heads over tensor.
    L, K, H = mcfg.num_layers, mcfg.num_kv_heads, mcfg.head_dim
    m = cfg.mesh
    rl60 = next(p for p in phases if p.phase == "rl_60k")
    S, G, R, B = 60416, 8, 10_000, cfg.rl.rollout_batch  # prompts sampled per call
    assert B and 128 % B == 0
    assert rl60.kv_cache == 2 * L * (B // (m.data * m.fsdp * m.sequence)) * (S + G * R) * (K // m.tensor) * H * 2
    # As first written (fsdp only, the whole batch in one forward and one sampling call) they
    # did not fit; the refusal names a knob.
    refused = 0
    for o in (
        ["mesh.sequence=1", f"mesh.fsdp={m.fsdp * m.sequence}"],
        ["rl.micro_batch=0"],
        ["rl.rollout_batch=0"],
        ["phases.sft.micro_rows=0"],
    ):
        cfg = load_config(path, o)
        if max(p.peak for p in planner.estimate(RunSpec.planned(cfg, devices))) > hbm_gib * planner.GIB:
            refused += 1
            with pytest.raises(planner.PlanError, match=r"GiB per device.*; .* change (mesh|model|rl|phases)"):
                planner.check_fits(RunSpec.planned(cfg, devices), hbm_gib * planner.GIB)
    assert refused >= 3
    assert planner.check_fits(RunSpec.planned(cfg, devices), 10**15)  # fits in (absurdly) large memory


def test_knob_follows_the_dominant_term():
    cd = configs.smoke.get_config()
    cfg = from_config_dict(cd)
    peak = max(p.peak for p in planner.estimate(RunSpec.planned(cfg, 1)))
    with pytest.raises(planner.PlanError, match=r"activations .* change model.remat='full'"):
        planner.check_fits(RunSpec.planned(cfg, 1), peak // 2)  # no remat, xla attention: activations dominate
    cd.model.update(remat="full", attention_impl="flash")
    cfg = from_config_dict(cd)
    with pytest.raises(planner.PlanError, match=r"change (rl.micro_batch|phases\[sft\].batch|mesh.fsdp)"):
        planner.check_fits(RunSpec.planned(cfg, 1), 1)


def test_kl_reference_is_priced_as_a_resident_params_copy():
    """rl.kl_coef > 0 keeps a frozen copy of the params in the train state for the whole run
    (compile_jobs and the trainer build the state with it): every phase's peak grows by exactly
    the params' bytes, and the table shows the term."""
    cd = configs.smoke.get_config()
    without = from_config_dict(cd)
    cd.rl.kl_coef = 0.1
    with_kl = from_config_dict(cd)
    a, b = planner.estimate(RunSpec.planned(without, 1)), planner.estimate(RunSpec.planned(with_kl, 1))
    assert [p.kind for p in b] == ["sft", "rl", "rl"]
    for p0, p1 in zip(a, b):
        assert p0.reference == 0 and p1.reference == p1.params > 0
        assert p1.peak - p0.peak == p1.params and p1.resident == p1.params * 2 + p1.optimizer
    assert "KL reference" in planner.format_table(b)


def test_mesh_errors_are_config_errors(capsys):
    rc = plan_cli.main(["--config", os.path.join(REPO, "configs", "r1_distill_32b_tpu.py"), "--devices", "48"])
    assert rc == 1
    assert capsys.readouterr().err.startswith("error: mesh")


def test_planner_prices_the_shapes_the_trainer_builds():
    """One source: the RunSpec works every phase's step shapes out once; the planner prices them,
    the compile check compiles them and the trainer's steps run at them (each reads spec.phases)."""
    cfg = load_config(os.path.join(REPO, "configs", "r1_distill_32b_tpu.py"))
    spec = RunSpec.planned(cfg)
    s = dataclasses.asdict(spec.phases[2].shapes)
    assert f"S={s['S']} R={s['R']} W={s['W']}" in planner.estimate(spec)[2].shape
    assert s == dict(
        B=128,
        G=8,
        S=60416,
        R=10_000,
        W=140416,
        rows=cfg.rl.micro_batch,
        updates=4,
        micro=32 // cfg.rl.micro_batch,
        sample_B=cfg.rl.rollout_batch,
        gen_B=cfg.rl.gen_batch,
    )


# --- against XLA:TPU and XLA:GPU: the compile check's recorded figures ------------------------

RECORDS = [
    "r1_distill_32b_tpu_v5p_4x4x4.json",
    "qwen25_1p5b_8k_v5p_2x2x1.json",
    "r1_distill_32b_gpu_h100_16x8.json",
    "r1_distill_32b_gpu_h200_8x8.json",
]


@pytest.mark.parametrize("record", RECORDS)
def test_estimate_within_20_percent_of_the_compiler(record):
    """The planner against XLA:TPU's / XLA:GPU's per-device totals recorded by `python -m
    qwenlong_jax.compile` (docs/benchmarks.md, "Compile check: the recorded tables"; recompiling the
    32B steps takes 10-30 min, so the compiler's side is the recorded JSON and the planner's side is
    recomputed here, priced for the record's backend): GRPO/SFT update = params + optimizer + update terms; sampler =
    params + optimizer (resident) + sampling terms."""
    import json

    with open(os.path.join(REPO, "qwenlong_jax", "assets", "results", "compile", record)) as f:
        rec = json.load(f)
    cfg = load_config(os.path.join(REPO, rec["config"]), rec["overrides"])
    chips = 1
    for v in rec["mesh"].values():
        chips *= v
    est = {p.phase: p for p in planner.estimate(RunSpec.planned(cfg, chips), backend=rec.get("kind", "tpu"))}
    checked = 0
    for r in rec["results"]:
        assert r["ok"] and r["fits"], r
        pm = est[r["phase"]]
        want = {"update": pm.params + pm.optimizer + pm.train, "sample": pm.params + pm.optimizer + pm.sample}.get(
            r["fn"]
        )
        if want is None:
            continue
        assert abs(want - r["total_bytes"]) <= 0.2 * r["total_bytes"], (r["phase"], r["fn"], want, r["total_bytes"])
        checked += 1
    assert checked >= 2  # an update and a sampler at least


def test_sft_padding_rule_is_the_trainers():
    """sft_round.sft_step pads packed rows with step_shapes.sft_padded_rows; the planner and the
    compile check price step_shapes.sft_step_shapes, its worst case (one example per row)."""
    assert step_shapes.sft_padded_rows(5, 2) == (8, 8)  # next power of two, one micro-batch
    assert step_shapes.sft_padded_rows(5, 2, 4) == (8, 4)
    assert step_shapes.sft_padded_rows(3, 8, 3) == (9, 3)  # batch axes, then the micro-batch
    assert step_shapes.sft_padded_rows(0, 1) == (1, 1)
    cfg = load_config(os.path.join(REPO, "configs", "r1_distill_32b_tpu.py"))
    sft = cfg.phases[0]
    s = step_shapes.sft_step_shapes(sft, 16)
    total, micro = step_shapes.sft_padded_rows(sft.batch, 16, sft.micro_rows)
    assert (s.rows, s.micro, s.W) == (micro, total // micro, step_shapes.sft_row_width(sft))
    assert s.W % 64 == 0 and sft.max_input + sft.max_output <= s.W


@pytest.mark.parametrize(
    "argv,want",
    [
        (["--config", "configs/smoke.py", "--bogus=1"], "error: Unknown command line flag 'bogus'"),
        (
            ["--config", "configs/smoke.py", "--config.mesh.nope=1"],
            "error: --config override: the config has no field 'nope'",
        ),
        (["--config", os.path.join("configs", "nope" + ".py")], "error: --config: "),  # a missing file
        (["--config", "configs/smoke.py", "stray"], "error: unrecognized arguments: stray"),
    ],
)
def test_cli_bad_input_is_one_error_line(argv, want, capsys):
    assert plan_cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(want) and "\n" not in err, err


def test_heldout_sets_are_priced_and_compiled_at_their_real_prompt_length():
    """The held-out prompts (document + template + question) fit the shape the planner prices and
    the compile check compiles: at 512 document tokens they overflow one prefill chunk (577 tokens),
    so both use two (S = 1024), as the sampler does."""
    from qwenlong_jax.config.model import tokenizer_path
    from qwenlong_jax.data.run_data import HELDOUT_PROMPT_OVERHEAD, load_run_data
    from qwenlong_jax.data.tokenizer import load_tokenizer

    c = configs.default.get_config()
    c.data.eval_per_length = 8
    cfg = from_config_dict(c)
    data = load_run_data(cfg, load_tokenizer(tokenizer_path(cfg)))
    for L, recs in data.heldout.items():
        B, S = step_shapes.heldout_shape(L, cfg.data.eval_per_length, 1)
        longest = max(r.num_prompt_tokens for r in recs)
        assert longest <= L + HELDOUT_PROMPT_OVERHEAD and longest <= S and B == 8
        assert sampler.bucket_length(longest, step_shapes.PREFILL_CHUNK) == S
    assert step_shapes.heldout_shape(512, 48, 4) == (16, 1024)
    assert step_shapes.heldout_shape(64, 2, 4) == (4, 256)  # padded to the batch axes
