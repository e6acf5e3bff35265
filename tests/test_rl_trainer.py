"""The RL step end to end in the trainer at the recipe's shape of an update: a reward that
varies (stub scorer), M=4 updates per step, dynamic sampling on with a forced partial batch
(2 of 4 groups valid, one generation round): after update 1 the importance ratio differs from 1
and clipping acts; the two all-padding updates are not applied; kl_coef > 0 changes the loss
and reports kl; rl.epochs=2 does twice the updates; gen_batch > batch keeps the extra valid
groups of every round until the batch is full."""

import jax
import numpy as np
import pytest

import configs.r1_distill_32b_tpu
import configs.smoke
from configs import common
from qwenlong_jax import rewards
from qwenlong_jax.config import from_config_dict
from qwenlong_jax.run.metrics import read_metrics
from qwenlong_jax.run.trainer import Trainer

G = 4


def _stub_scores(items, judge=None):
    """Group g of a generation call varies (2 of its G responses right) when g is even."""
    return [1.0 if (i // G) % 2 == 0 and i % G < 2 else 0.0 for i in range(len(items))]


def _cfg(**rl):
    c = configs.smoke.get_config()
    c.optim.update(lr=3e-2)
    c.rl.update({**dict(group_size=G, mini_batch=1, gen_batch=4, max_gen_rounds=1, clip_high=0.28), **rl})
    c.phases = dict(rl=common.phase(0, "rl", 160, 16, steps=1, batch=4))
    c.data.update(synthetic_per_phase=8, eval_lengths=())
    c.export_hf = False
    return from_config_dict(c)


def _run(tmp_path, name, **rl):
    t = Trainer(_cfg(**rl), str(tmp_path / name), quiet=True, devices=jax.devices()[:1])
    t.run()
    (row,) = read_metrics(str(tmp_path / name))
    return row, {k: np.asarray(v) for k, v in t.last_update_metrics.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(rewards, "hybrid_scores", _stub_scores)
    tmp = tmp_path_factory.mktemp("rl_trainer")
    try:
        yield {"base": _run(tmp, "base"), "kl_epochs": _run(tmp, "kl_epochs", kl_coef=0.5, epochs=2)}
    finally:
        mp.undo()


def test_partial_batch_four_updates_ratio_and_clipping(runs):
    row, upd = runs["base"]
    # Dynamic sampling kept 2 of the 4 groups (one round): 2 real updates, 2 of padding.
    assert row["kept_groups"] == 2 and row["filtered_groups"] == 2 and row["gen_rounds"] == 1
    assert upd["empty"].tolist() == [0, 0, 1, 1] and row["updates"] == 2 and row["empty_updates"] == 2
    assert upd["ratio_mean"][0] == pytest.approx(1.0, abs=1e-5)  # update 1: old_logp is the policy
    assert abs(upd["ratio_mean"][1] - 1.0) > 1e-3 or abs(upd["ratio_max"][1] - 1.0) > 1e-3
    assert upd["clip_frac"][:2].max() > 0
    # Empty updates contribute nothing to the reported means.
    np.testing.assert_allclose(row["clip_frac"], upd["clip_frac"][:2].mean(), rtol=1e-5)
    for k in ("rollout/logp_diff_mean", "rollout/logp_diff_max", "rollout/kl"):
        assert np.isfinite(row[k]) and row[k] >= 0
    assert row["rollout/logp_diff_max"] < 1e-3  # float32 CPU: the sampler and the trainer agree


def test_kl_changes_the_loss_and_epochs_double_the_updates(runs):
    (row0, upd0), (row1, upd1) = runs["base"], runs["kl_epochs"]
    assert len(upd1["loss"]) == 2 * len(upd0["loss"]) == 8
    assert row1["updates"] == 2 * row0["updates"] == 4 and row1["empty_updates"] == 4
    assert "kl" in row1 and "kl" not in row0 and row1["kl"] > 0
    # Update 1 starts at the reference (kl 0, zero gradient); update 2 adds kl_coef * kl.
    assert upd1["kl"][0] == pytest.approx(0.0, abs=1e-7) and upd1["kl"][1] > 0
    np.testing.assert_allclose(upd1["actor_loss"][1] - upd0["actor_loss"][1], 0.5 * upd1["kl"][1], rtol=1e-3, atol=1e-7)
    assert row1["loss"] != row0["loss"]


def test_gen_batch_keeps_extra_valid_groups_across_rounds(tmp_path, monkeypatch):
    monkeypatch.setattr(rewards, "hybrid_scores", _stub_scores)
    # 3 prompts per round, groups 0 and 2 valid: round 1 keeps 2, round 2 keeps 2 more -> full.
    row, upd = _run(tmp_path, "gen", gen_batch=3, max_gen_rounds=5, mini_batch=4)
    assert row["gen_rounds"] == 2 and row["generated_groups"] == 6
    assert row["kept_groups"] == 4 and row["surplus_groups"] == 0 and row["filtered_groups"] == 2
    assert row["updates"] == 1 and row["empty_updates"] == 0


def test_validation_planning_and_training_use_the_checkpoints_model_config(tmp_path):
    import json

    import configs.default
    from qwenlong_jax import models
    from qwenlong_jax.run.spec import RunSpec

    cfg = from_config_dict(configs.default.get_config())
    with open(f"{cfg.model.init_from}/config.json") as f:
        inter = json.load(f)["intermediate_size"]
    assert inter != models.get_model_config("tiny").intermediate_size  # the case that went wrong
    t = Trainer(cfg, str(tmp_path / "w"), quiet=True, devices=jax.devices()[:1])
    assert t.mcfg.intermediate_size == inter and t.mcfg == RunSpec.planned(cfg).mcfg
    from qwenlong_jax.run.state import init_state

    state = init_state(t.ctx)
    assert state.params["layers"]["gate"].shape[-1] == inter


def _phase_steps(phase, num_records, rl=None):
    """run.schedule.phase_steps of `phase` at the step shapes a RunSpec gives it."""
    from qwenlong_jax.config import RLConfig
    from qwenlong_jax.run.schedule import phase_steps
    from qwenlong_jax.run.spec import PhaseSpec
    from qwenlong_jax.run.step_shapes import rl_step_shapes, sft_step_shapes

    shapes = rl_step_shapes(phase, rl or RLConfig()) if phase.kind == "rl" else sft_step_shapes(phase, 1)
    return phase_steps(PhaseSpec(phase, shapes), num_records)


def test_phase_epochs_set_the_step_count():
    from qwenlong_jax.config import ConfigError, PhaseConfig

    assert _phase_steps(PhaseConfig(name="s", kind="sft", batch=16, epochs=3), 256) == 48
    assert _phase_steps(PhaseConfig(name="s", kind="sft", batch=16), 256) == 16
    assert _phase_steps(PhaseConfig(name="s", kind="sft", batch=16, steps=5), 256) == 5
    with pytest.raises(ConfigError, match=r"phases\[s\]: set steps or epochs, not both"):
        PhaseConfig(name="s", kind="sft", steps=5, epochs=3)
    c = configs.smoke.get_config()
    c.phases.sft.steps = 0
    c.phases.sft.epochs = 3
    assert from_config_dict(c).phases[0].epochs == 3


def test_rl_epochs_count_generation_batches():
    """An RL step generates for rl.gen_batch prompts, so `epochs` passes take epochs x N /
    gen_batch steps (the reference's count), not epochs x N / batch (3x as many at gen 3x)."""
    from qwenlong_jax.config import PhaseConfig, RLConfig

    rl_phase = PhaseConfig(name="r", kind="rl", batch=128)
    assert _phase_steps(rl_phase, 1200, RLConfig(gen_batch=384)) == 4  # ceil(1200 / 384)
    assert _phase_steps(rl_phase, 1200, RLConfig()) == 10  # gen_batch 0: the phase batch
    assert _phase_steps(PhaseConfig(name="r", kind="rl", batch=128, epochs=2), 1200, RLConfig(gen_batch=384)) == 7
    # The 32B configs: one pass over each RL phase's examples in generation batches of 384.
    cfg = from_config_dict(configs.r1_distill_32b_tpu.get_config())
    assert cfg.rl.gen_batch == 384 and [p.epochs for p in cfg.phases if p.kind == "rl"] == [1, 1]
    assert [_phase_steps(p, 1591, cfg.rl) for p in cfg.phases] == [38, 5, 5]  # SFT: 3 x 1591 / 128


def test_a_step_without_any_valid_group_counts_its_updates_empty(tmp_path, monkeypatch):
    """No group varies: nothing is trained; the step reports its M updates as empty and none as
    non-finite (one counter each, where `skipped` used to mean both)."""
    monkeypatch.setattr(rewards, "hybrid_scores", lambda items, judge=None: [0.0] * len(items))
    Trainer(_cfg(), str(tmp_path / "none"), quiet=True, devices=jax.devices()[:1]).run()
    (row,) = read_metrics(str(tmp_path / "none"))
    assert row["kept_groups"] == 0 and row["updates"] == 0
    assert row["empty_updates"] == 4 and row["nonfinite_updates"] == 0 and "skipped" not in row


def test_gen_batch_over_batch_without_dynamic_sampling_is_a_config_error():
    """Without dynamic sampling every group is kept, so a generation batch over the train batch
    would generate groups only to throw them away: refused before anything compiles."""
    from qwenlong_jax.config import ConfigError
    from qwenlong_jax.run.spec import RunSpec, run_mesh

    mesh = run_mesh(_cfg(), jax.devices()[:1])
    RunSpec.build(_cfg(dynamic_sampling=True, gen_batch=8), mesh)
    RunSpec.build(_cfg(dynamic_sampling=False, gen_batch=4), mesh)  # = batch
    with pytest.raises(ConfigError, match=r"rl.gen_batch=8 > phases\[rl\].batch=4 with rl.dynamic_sampling=False"):
        RunSpec.build(_cfg(dynamic_sampling=False, gen_batch=8), mesh)


def test_dynamic_loss_scope_trains_in_the_trainer(tmp_path, monkeypatch):
    """rl.loss_scope="dynamic" through the real step: the host computes each token's coefficient
    from the packed batch, the jitted update takes it, and the updates apply."""
    monkeypatch.setattr(rewards, "hybrid_scores", _stub_scores)
    row, upd = _run(tmp_path, "dyn", loss_scope="dynamic", token_budget=200)
    assert row["kept_groups"] == 2 and row["updates"] == 2 and row["nonfinite_updates"] == 0
    assert np.isfinite(row["loss"]) and upd["empty"].tolist() == [0, 0, 1, 1]
