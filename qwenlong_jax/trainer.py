"""The training run: SFT warm-up and RL phases of growing context, checkpointed and resumable.

    summary = Trainer(cfg, workdir).run()

One loop drives every phase (DESIGN.md): SFT phases take a supervised step; RL phases take
(sample -> reward -> GRPO update) steps with DAPO dynamic sampling. Jitted functions are
built once per phase (shapes are static within a phase). Checkpoints hold everything needed
to resume (checkpoint.py); a resumed run produces the same params and metrics as an
uninterrupted one (RNG keys derive from (seed, step), the data order from the checkpointed
grain iterator). SIGTERM/SIGINT: the current step finishes, a checkpoint is written, exit 0.
"""
from __future__ import annotations

import functools
import json
import math
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from qwenlong_jax import config as config_lib
from qwenlong_jax import distributed, models, plan, rewards, sharding
from qwenlong_jax.checkpoint import Checkpointer, abstract_like
from qwenlong_jax.config import Config, PhaseConfig
from qwenlong_jax.curriculum import Difficulty, PhaseData, hard_pool_for, phase_records
from qwenlong_jax.data.pipeline import process_shard
from qwenlong_jax.data.sft import encode_sft
from qwenlong_jax.data.tokenizer import DEFAULT_TOKENIZER, copy_tokenizer, load_tokenizer
from qwenlong_jax.datasets import load_run_data
from qwenlong_jax.metrics import MetricsWriter, plot_run
from qwenlong_jax.rl import grpo_step, packing
from qwenlong_jax.rl.advantages import group_advantages
from qwenlong_jax.rl.dynamic_sampling import varying_groups
from qwenlong_jax.rl.sft_step import pack_sft_rows, sft_update
from qwenlong_jax.rollout import PREFILL_CHUNK, rl_step_shapes, rollout
from qwenlong_jax.eval.sweep import accuracy_by_length
from qwenlong_jax.train_state import TrainState, make_optimizer, with_lr



class TrainingError(RuntimeError):
    """A run that cannot go on (e.g. K non-finite steps in a row); a checkpoint was written."""


def _tokenizer_path(cfg: Config) -> str:
    if cfg.data.tokenizer:
        return cfg.data.tokenizer
    for base in (cfg.model.init_from, cfg.model.hf_path):
        if base:
            for cand in (os.path.join(base, "tokenizer"), base):
                if os.path.exists(os.path.join(cand, "spm.model")) or os.path.exists(
                        os.path.join(cand, "tokenizer.json")):
                    return cand
    return DEFAULT_TOKENIZER


def phase_steps(phase: PhaseConfig, num_records: int) -> int:
    return phase.steps or max(1, math.ceil(phase.epochs * num_records / phase.batch))


def model_config(cfg: Config, vocab_size: int) -> models.ModelConfig:
    """The config of the model actually trained: the checkpoint's (config.json of
    model.init_from) when set, else the named size; with the run's execution settings."""
    m = cfg.model
    if not m.init_from:
        return config_lib.build_model_config(m, vocab_size)
    try:
        mcfg = models.read_hf_config(m.init_from, param_dtype=m.param_dtype, dtype=m.dtype,
                                     attention_impl=m.attention_impl, remat=m.remat,
                                     scan_layers=m.scan_layers, logits_chunk=m.logits_chunk)
    except (ValueError, OSError) as e:
        raise config_lib.ConfigError(f"model.init_from: {e}") from None
    if m.size == "tiny" and mcfg.vocab_size != vocab_size:
        raise config_lib.ConfigError(
            f"model.init_from vocab {mcfg.vocab_size} != tokenizer vocab {vocab_size}")
    return mcfg


def validate_run(cfg: Config, mcfg, mesh) -> None:
    """Everything checkable before compiling: layouts, batch splits, overlong buffer."""
    batch_axes = sharding.batch_axis_size(mesh)
    try:
        sharding.check_layout(models.logical_axes(mcfg), models.param_shapes(mcfg), mesh)
    except ValueError as e:  # a mesh the model does not split over: a config error, one line
        raise config_lib.ConfigError(str(e)) from None
    for ph in cfg.phases:
        if ph.batch % jax.process_count():
            raise config_lib.ConfigError(
                f"phases[{ph.name}].batch={ph.batch} must be divisible by the {jax.process_count()} "
                "processes (each draws an equal share of every batch)")
        if ph.kind != "rl":
            if ph.micro_rows and ph.micro_rows % batch_axes:
                raise config_lib.ConfigError(
                    f"phases[{ph.name}].micro_rows={ph.micro_rows} is not divisible by the mesh batch axes "
                    f"(data*fsdp={batch_axes}); change phases[{ph.name}].micro_rows or mesh")
            continue
        gen_b = cfg.rl.gen_batch or ph.batch
        if gen_b % jax.process_count():
            raise config_lib.ConfigError(
                f"rl.gen_batch={gen_b} must be divisible by the {jax.process_count()} processes")
        if cfg.rl.rollout_batch and gen_b % cfg.rl.rollout_batch:
            raise config_lib.ConfigError(
                f"prompts per generation round (rl.gen_batch or phases[{ph.name}].batch) = {gen_b} must be "
                f"a multiple of rl.rollout_batch={cfg.rl.rollout_batch}")
        mini = min(cfg.rl.mini_batch, ph.batch)
        micro = cfg.rl.micro_batch or mini
        if ph.batch % mini or mini % micro:
            raise config_lib.ConfigError(
                f"phases[{ph.name}].batch={ph.batch} must split into rl.mini_batch={mini} and "
                f"rl.micro_batch={micro} evenly")
        if micro % batch_axes:
            raise config_lib.ConfigError(
                f"rl.micro_batch={micro} groups is not divisible by the mesh batch axes (data*fsdp="
                f"{batch_axes}); change rl.micro_batch or mesh")
        if cfg.rl.overlong_buffer >= ph.max_output:
            raise config_lib.ConfigError(
                f"rl.overlong_buffer={cfg.rl.overlong_buffer} must be < phases[{ph.name}].max_output="
                f"{ph.max_output}")


class Trainer:
    def __init__(self, cfg: Config, workdir: str, *, judge=None, stop_after_steps: int | None = None,
                 quiet: bool = False, devices=None):
        self.cfg, self.workdir, self.quiet = cfg, workdir, quiet
        self.stop_after_steps = stop_after_steps  # test hook: stop (with a checkpoint) after N steps
        self._stop_requested = False
        os.makedirs(workdir, exist_ok=True)
        if cfg.distributed:
            distributed.initialize(cfg.coordinator_address, cfg.num_processes, cfg.process_id)
        try:
            self.mesh = sharding.make_mesh(cfg.mesh, devices)  # devices: all by default (tests pass a subset)
        except ValueError as e:  # mesh sizes that do not match the devices: a config error
            raise config_lib.ConfigError(str(e)) from None
        self.tok_path = _tokenizer_path(cfg)
        self.tok = load_tokenizer(self.tok_path)
        self.mcfg = model_config(cfg, self.tok.vocab_size)  # validated, planned and trained alike
        validate_run(cfg, self.mcfg, self.mesh)
        hbm = plan.device_hbm_bytes()  # None on CPU: nothing to check against
        if hbm:
            plan.check_fits(cfg, self.mesh.size, hbm, self.mcfg)  # refuse a phase that cannot fit
        self.p_shard = sharding.param_shardings(models.logical_axes(self.mcfg), models.param_shapes(self.mcfg),
                                                self.mesh)
        self.judge = judge if judge is not None else self._make_judge()
        self.data = load_run_data(cfg, self.tok)
        self.by_id = {r.id: r for r in self.data.train + self.data.sft}
        self.per_phase = [phase_records(self.data.sft if p.kind == "sft" else self.data.train, p)
                          for p in cfg.phases]
        self.tx = make_optimizer(cfg.optim)
        self._prompt_cache: dict[str, list[int]] = {}

    # --- setup ------------------------------------------------------------------------------
    def _make_judge(self):
        j = self.cfg.judge
        if not j.url:
            return None
        return rewards.OpenAIJudge(rewards.JudgeConfig(
            base_url=j.url, model=j.model, api_key_env=j.api_key_env, max_concurrency=j.max_concurrency,
            timeout_s=j.timeout_s, max_retries=j.retries))

    def _init_state(self) -> TrainState:
        m = self.cfg.model
        if m.init_from:
            exec_overrides = dict(dtype=m.dtype, attention_impl=m.attention_impl, remat=m.remat,
                                  scan_layers=m.scan_layers, logits_chunk=m.logits_chunk)
            mcfg, params = models.load_hf_checkpoint(m.init_from, jnp.dtype(m.param_dtype), mesh=self.mesh,
                                                     overrides=exec_overrides)
            assert mcfg == self.mcfg, (mcfg, self.mcfg)  # model_config() read the same config.json
        else:
            params = jax.jit(lambda k: models.init_params(self.mcfg, k), out_shardings=self.p_shard)(
                jax.random.key(self.cfg.seed))
        state = jax.jit(lambda p: TrainState.create(p, self.tx))(params)
        if self.cfg.rl.kl_coef and any(p.kind == "rl" for p in self.cfg.phases):
            state = state.replace(ref_params=self._reference(state.params))
        return state

    def _reference(self, params):
        """The KL reference: the checkpoint rl.ref_from, else a copy of `params` (a phase's start)."""
        ref_from = self.cfg.rl.ref_from
        if not ref_from:
            return jax.tree.map(jnp.copy, params)  # distinct buffers: the state is donated
        m = self.cfg.model
        rcfg, ref = models.load_hf_checkpoint(
            ref_from, jnp.dtype(m.param_dtype), mesh=self.mesh,
            overrides=dict(dtype=m.dtype, attention_impl=m.attention_impl, remat=m.remat,
                           scan_layers=m.scan_layers, logits_chunk=m.logits_chunk))
        if rcfg != self.mcfg:
            raise config_lib.ConfigError(f"rl.ref_from={ref_from}: its model config differs from the trained "
                                         "model's (the reference must share the architecture)")
        return ref

    def _prompt(self, rec) -> list[int]:
        if rec.id not in self._prompt_cache:
            self._prompt_cache[rec.id] = self.tok.chat_prompt(rec.prompt)
        return self._prompt_cache[rec.id]

    # --- jitted steps, built per phase -------------------------------------------------------
    def _rows_sharding(self, ndim_lead: int, ndim_tail: int):
        return sharding.named(self.mesh, *([None] * ndim_lead), "batch", *([None] * ndim_tail))

    # Explicit shardings: the state keeps the layout it was created with (params by the rules
    # table, optimizer moments alike), batches are split over the mesh's batch axes on their
    # rows dimension, metrics are replicated. The state is donated.
    @functools.lru_cache(maxsize=None)
    def _sft_fn(self):
        rows = self._rows_sharding(1, 1)
        batch_sh = {k: rows for k in ("tokens_BW", "positions_BW", "segment_ids_BW", "loss_mask_BW")}
        return jax.jit(lambda s, b: sft_update(self.mcfg, self.tx, s, b), donate_argnums=0,
                       in_shardings=(self._state_sharding, batch_sh),
                       out_shardings=(self._state_sharding, sharding.replicated(self.mesh)))

    @functools.lru_cache(maxsize=None)
    def _grpo_fns(self, ls: grpo_step.LossSettings):
        tokens = self._rows_sharding(2, 1)
        batch_sh = {k: tokens for k in grpo_step.ROW_KEYS + (
            "unpack_idx_NR", "mask_NR", "old_logp_NR") + ls.token_keys}
        batch_sh["adv_N"] = self._rows_sharding(2, 0)
        logp_sh = {k: v for k, v in batch_sh.items() if k not in ("old_logp_NR",) + ls.token_keys}
        update = jax.jit(lambda s, b: grpo_step.grpo_update(self.mcfg, ls, self.tx, s, b), donate_argnums=0,
                         in_shardings=(self._state_sharding, batch_sh),
                         out_shardings=(self._state_sharding, sharding.replicated(self.mesh)))
        logp = jax.jit(lambda p, b: grpo_step.policy_logprobs(self.mcfg, ls, p, b),
                       in_shardings=(self._state_sharding.params, logp_sh), out_shardings=tokens)
        agree = jax.jit(lambda s, o, m: grpo_step.rollout_agreement(s, o, m, ls.tis_cap),
                        in_shardings=(tokens, tokens, tokens),
                        out_shardings=(tokens, sharding.replicated(self.mesh)))
        return update, logp, agree

    def _lr(self, phase: PhaseConfig, phase_step: int, n_steps: int) -> float:
        """optim.schedule within a phase: linear warmup, then constant or cosine to 10%."""
        o = self.cfg.optim
        lr = phase.lr or o.lr
        if o.warmup_steps and phase_step < o.warmup_steps:
            return lr * (phase_step + 1) / o.warmup_steps
        if o.schedule == "cosine":
            frac = (phase_step - o.warmup_steps) / max(n_steps - o.warmup_steps, 1)
            return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0))))
        return lr

    # --- steps ------------------------------------------------------------------------------
    def _sft_step(self, state, recs, phase):
        examples = []
        for r in recs:
            ids, mask = encode_sft(r, self.tok)
            n_prompt = mask.index(1)
            examples.append((ids[:n_prompt], ids[n_prompt:]))
        W = packing.round_up(phase.max_input + phase.max_output, 64)
        rows = pack_sft_rows(examples, W)
        batch_axes = sharding.batch_axis_size(self.mesh)
        n = max(len(rows["tokens_BW"]), 1)
        target = packing.round_up(1 << (n - 1).bit_length(), batch_axes)  # few distinct shapes
        micro = phase.micro_rows or target
        target = packing.round_up(target, micro)
        rows = {k: np.pad(v, ((0, target - len(v)), (0, 0))) for k, v in rows.items()}
        batch = {k: v.reshape(target // micro, micro, W) for k, v in rows.items()}  # [U, rows, W]
        with jax.set_mesh(self.mesh):
            state, m = self._sft_fn()(state, jax.device_put(batch, self._rows_sharding(1, 1)))
        m = jax.device_get(m)
        return state, {"sft/nll": m["nll"], "sft/token_acc": m["token_acc"], "loss": m["loss"],
                       "grad_norm": m["grad_norm"], "skipped": m["skipped"]}

    def _rl_step(self, state, step, phase, pdata, difficulty):
        """Generate rounds of gen_B prompts until B groups carry a learning signal (DAPO: the
        groups whose accuracy varies; every group without dynamic sampling), keeping every
        valid group of every round, then update on the first B of them (the rest, the surplus
        of the last round, is counted and dropped: the next step samples afresh from the newer
        policy). Short of B after max_gen_rounds, the batch is padded with empty groups, which
        the update never learns from (grpo_step)."""
        cfg, rl, G = self.cfg, self.cfg.rl, self.cfg.rl.group_size
        B = phase.batch
        shapes = rl_step_shapes(phase, rl, PREFILL_CHUNK)
        gen_B = shapes.gen_B
        pool: list = []  # (record, prompt, responses, rewards, sampler logprobs)
        kept: list[int] = []  # pool indices of the valid groups, in arrival order
        all_reward, all_acc, all_len, all_trunc, all_score = [], [], [], [], []
        hard_drawn = rounds = filtered = 0
        t0 = time.time()
        gen_tokens = 0
        while True:
            recs, k_hard = pdata.next_batch(gen_B, difficulty)
            hard_drawn += k_hard
            key = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), step), rounds)
            with jax.set_mesh(self.mesh):
                ro = rollout(self.mcfg, state.params, self.tok, recs, [self._prompt(r) for r in recs],
                             phase=phase, rl=rl, key=key, judge=self.judge, prefill_chunk=PREFILL_CHUNK)
            rounds += 1
            gen_tokens += int(ro.length_N.sum())
            reward_BG = ro.reward_N.reshape(gen_B, G)
            difficulty.update([r.id for r in recs], ro.score_N.reshape(gen_B, G).mean(1))
            valid_B = (varying_groups(ro.acc_N.astype(np.float32), G) if rl.dynamic_sampling
                       else np.ones(gen_B, bool))
            for b, r in enumerate(recs):
                if valid_B[b]:
                    kept.append(len(pool))
                pool.append((r, ro.prompts[b], ro.responses[b * G:(b + 1) * G], reward_BG[b],
                             ro.sampler_logps[b * G:(b + 1) * G]))
            filtered += int((~valid_B).sum())
            all_reward.append(ro.reward_N); all_acc.append(ro.acc_N); all_len.append(ro.length_N)
            all_trunc.append(ro.truncated_N); all_score.append(ro.score_N)
            # Without dynamic sampling every group is valid: rounds run until the batch is full.
            if len(kept) >= B or (rl.dynamic_sampling and rounds >= rl.max_gen_rounds):
                break
        groups = kept[:B]
        gen_s = time.time() - t0
        metrics = {
            "reward_mean": float(np.mean(np.concatenate(all_reward))),
            "reward_std": float(np.std(np.concatenate(all_reward))),
            "score_mean": float(np.mean(np.concatenate(all_score))),
            "accuracy": float(np.mean(np.concatenate(all_acc))),
            "response_length": float(np.mean(np.concatenate(all_len))),
            "truncated_frac": float(np.mean(np.concatenate(all_trunc))),
            "generated_groups": float(len(pool)),
            "filtered_groups": float(filtered),
            "surplus_groups": float(len(kept) - len(groups)),
            "gen_rounds": float(rounds),
            "kept_groups": float(len(groups)),
            "hard_pool": float(len(pdata.hard_pool)),
            "hard_drawn": float(hard_drawn),
            "gen_tokens_per_s": gen_tokens / max(gen_s, 1e-9),
        }
        if self.judge is not None:
            js = self.judge.stats()
            metrics.update({"judge/calls": float(js.get("calls", 0)), "judge/failures": float(js.get("failures", 0))})
        if not groups:
            metrics["skipped"] = 1.0
            return state, metrics
        # Fixed shapes: pad to B groups with empty ones (mask 0: no loss, no gradient, and an
        # update whose mini-batch is all padding is not applied).
        pad = B - len(groups)
        prompts = [pool[g][1] for g in groups] + [[self.tok.pad_id]] * pad
        responses = [resp for g in groups for resp in pool[g][2]] + [[]] * (G * pad)
        rewards_N = np.concatenate([pool[g][3] for g in groups] + [np.zeros(G * pad, np.float32)])
        adv_N = np.asarray(group_advantages(jnp.asarray(rewards_N), G, normalize_std=rl.normalize_std))
        rows = packing.pack_groups(prompts, responses, G, shapes.W, shapes.R)
        batch = grpo_step.grpo_batch(rows, adv_N, shapes.updates, shapes.micro)
        sampler_NR = np.zeros(rows.mask_NR.shape, np.float32)
        for n, lp in enumerate(lp for g in groups for lp in pool[g][4]):
            sampler_NR[n, :len(lp)] = lp
        sampler_NR = sampler_NR.reshape(batch["mask_NR"].shape)
        ls = grpo_step.LossSettings.from_rl(rl)
        update, logp_fn, agree_fn = self._grpo_fns(ls)
        shard = {k: self._rows_sharding(2, v.ndim - 3) for k, v in batch.items()}
        t1 = time.time()
        with jax.set_mesh(self.mesh):
            dev = jax.device_put(batch, shard)
            logp_in = {k: v for k, v in dev.items() if k != "old_logp_NR"}
            dev["old_logp_NR"] = logp_fn(state.params, logp_in)
            if ls.kl_coef:  # the reference's logprobs: the same packed pass, frozen params
                dev["ref_logp_NR"] = logp_fn(state.ref_params, logp_in)
            is_weight, agree = agree_fn(jax.device_put(sampler_NR, shard["mask_NR"]), dev["old_logp_NR"],
                                        dev["mask_NR"])
            if ls.tis_cap:
                dev["is_weight_NR"] = is_weight
            state, m = update(state, dev)
        m = jax.device_get(m)
        train_tokens = float(rows.mask_NR.sum() + sum(len(p) for p in prompts))
        metrics.update({k: float(v) for k, v in jax.device_get(agree).items()})
        metrics.update({
            "loss": m["actor_loss"], "pg_loss": m["pg_loss"], "clip_frac": m["clip_frac"],
            "entropy": m["entropy"], "approx_kl": m["approx_kl"], "grad_norm": m["grad_norm"],
            "ratio_mean": m["ratio_mean"], "ratio_max": m["ratio_max"],
            "updates": m["updates"], "empty_updates": m["empty_updates"],
            "skipped": m["skipped"], "train_tokens_per_s": train_tokens / max(time.time() - t1, 1e-9),
        })
        if ls.kl_coef:
            metrics["kl"] = m["kl"]
        metrics = {k: float(v) for k, v in metrics.items()}
        self.last_update_metrics = m["by_update"]  # per update, for tests and debugging
        return state, metrics

    # --- evaluation ---------------------------------------------------------------------------
    def evaluate(self, params) -> dict:
        """Greedy held-out accuracy per context length (rule score, eval.sweep)."""
        if not self.data.heldout:
            return {}
        res = accuracy_by_length(self.mcfg, params, self.tok, self.data.heldout,
                                 max_new_tokens=self.cfg.data.eval_max_new_tokens, mesh=self.mesh)
        return {f"heldout/acc@{n}": float(a) for n, a in res["by_length"].items() if a is not None}

    # --- the run -----------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        self._stop_requested = True
        if not self.quiet:
            print(f"\nsignal {signum}: finishing the current step, then checkpointing and exiting")

    def run(self) -> dict:
        cfg = self.cfg
        t_start = time.time()
        ckpt = Checkpointer(os.path.join(self.workdir, "checkpoints"), keep=cfg.keep_checkpoints)
        state = self._init_state()
        self._state_sharding = jax.tree.map(lambda x: x.sharding, state)
        meta = {"phase_index": 0, "phase_step": 0, "step": 0, "phase_data": None,
                "difficulty": Difficulty().state(), "evals": []}
        restored = ckpt.restore_latest(abstract_like(state))
        if restored is not None:
            _, state, meta = restored
            if not self.quiet:
                print(f"resumed from step {meta['step']} (phase {cfg.phases[meta['phase_index']].name}"
                      if meta["phase_index"] < len(cfg.phases) else f"resumed a finished run at step {meta['step']}")
        difficulty = Difficulty.from_state(meta["difficulty"])
        pi = jax.process_index()
        writer = MetricsWriter(self.workdir if pi == 0 else os.path.join(self.workdir, f"process_{pi}"),
                               resume_step=meta["step"], enabled=pi == 0 or cfg.log_all_processes,
                               tensorboard=pi == 0)
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        step = meta["step"]
        steps_this_run = 0

        def save():
            meta["step"] = step
            meta["difficulty"] = difficulty.state()
            ckpt.save(step, state, meta)

        try:
            while meta["phase_index"] < len(cfg.phases):
                k = meta["phase_index"]
                phase = cfg.phases[k]
                recs = self.per_phase[k]
                hard = hard_pool_for(k, cfg.phases, self.per_phase, difficulty, cfg.retro) if phase.kind == "rl" else []
                pdata = PhaseData(recs, hard, phase, cfg.retro, seed=cfg.seed * 1000 + k + 1_000_003 * cfg.data.shuffle_seed,
                                  shard=process_shard() if jax.process_count() > 1 else None,
                                  gather=sharding.process_allgather_ints)
                if meta["phase_data"] is not None:
                    pdata.restore(meta["phase_data"], self.by_id)
                n_steps = phase_steps(phase, len(recs))
                bar = tqdm(total=n_steps, initial=meta["phase_step"], desc=f"{phase.name} ({phase.kind})",
                           disable=self.quiet or jax.process_index() != 0)
                if phase.kind == "rl" and cfg.rl.kl_coef and not cfg.rl.ref_from and meta["phase_step"] == 0:
                    state = state.replace(ref_params=self._reference(state.params))  # the phase's start
                while meta["phase_step"] < n_steps:
                    lr = self._lr(phase, meta["phase_step"], n_steps)
                    state = with_lr(state, lr)
                    if phase.kind == "sft":
                        batch_recs, _ = pdata.next_batch(phase.batch, difficulty)
                        state, metrics = self._sft_step(state, batch_recs, phase)
                    else:
                        state, metrics = self._rl_step(state, step, phase, pdata, difficulty)
                    step += 1
                    steps_this_run += 1
                    meta["phase_step"] += 1
                    meta["phase_data"] = pdata.state()
                    self._check_finite(state, metrics, save)
                    last_of_phase = meta["phase_step"] == n_steps
                    if (cfg.eval_every and step % cfg.eval_every == 0) or last_of_phase:
                        ev = self.evaluate(state.params)
                        metrics.update(ev)
                        meta["evals"].append({"step": step, "phase": phase.name, **ev})
                    writer.write(step, phase.name, {**metrics, "lr": float(lr)})
                    bar.update(1)
                    bar.set_postfix({k2: f"{metrics[k2]:.3f}" for k2 in ("reward_mean", "sft/nll", "loss") if k2 in metrics})
                    if last_of_phase:
                        meta["phase_index"] += 1
                        meta["phase_step"] = 0
                        meta["phase_data"] = None
                    stop = self._stop_requested or (self.stop_after_steps and steps_this_run >= self.stop_after_steps)
                    if step % cfg.checkpoint_every == 0 or last_of_phase or stop:
                        save()
                    if stop:
                        bar.close()
                        return {"stopped": True, "step": step}
                    if last_of_phase:
                        break
                bar.close()
            save()
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
            writer.close()
            ckpt.close()
        return self._finish(state, meta, time.time() - t_start)

    def _check_finite(self, state, metrics, save) -> None:
        bad = int(jax.device_get(state.nonfinite_in_a_row))
        metrics["nonfinite_total"] = float(jax.device_get(state.nonfinite_total))
        if bad >= self.cfg.optim.max_nonfinite_in_a_row:
            save()
            raise TrainingError(
                f"{bad} non-finite losses/gradients in a row (optim.max_nonfinite_in_a_row="
                f"{self.cfg.optim.max_nonfinite_in_a_row}); the last good state is checkpointed in "
                f"{self.workdir}/checkpoints. Lower optim.lr or check the data.")

    def _finish(self, state, meta, seconds: float) -> dict:
        export = os.path.join(self.workdir, "hf")
        if self.cfg.export_hf:
            models.save_hf_checkpoint(export, self.mcfg, state.params)
            if jax.process_index() == 0:
                copy_tokenizer(self.tok_path, os.path.join(export, "tokenizer"))
        plots = plot_run(self.workdir) if jax.process_index() == 0 else []
        evals = meta["evals"]
        summary = {"steps": meta["step"], "minutes": round(seconds / 60, 2), "evals": evals,
                   "export": export if self.cfg.export_hf else None, "plots": plots}
        if jax.process_index() == 0:
            with open(os.path.join(self.workdir, "summary.json"), "w") as f:
                json.dump(summary, f, indent=2)
        return summary
