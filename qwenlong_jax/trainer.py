"""The training run: SFT warm-up and RL phases of growing context, checkpointed and resumable.

    summary = Trainer(cfg, workdir).run()

One loop drives every phase (docs/design.md): SFT phases take a supervised step; RL phases take
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
from qwenlong_jax import distributed, models, paths, plan, rewards, sharding, step_fns
from qwenlong_jax.checkpoint import Checkpointer, abstract_like
from qwenlong_jax.config import Config, PhaseConfig
from qwenlong_jax.curriculum import Difficulty, PhaseData, hard_pool_for, phase_records
from qwenlong_jax.data.pipeline import process_shard
from qwenlong_jax.data.sft import encode_sft
from qwenlong_jax.data.tokenizer import DEFAULT_TOKENIZER, load_tokenizer
from qwenlong_jax.export import export_hf
from qwenlong_jax.datasets import load_run_data
from qwenlong_jax.metrics import MetricsWriter, plot_run
from qwenlong_jax.rl import grpo_step, packing
from qwenlong_jax.rl.advantages import group_advantages
from qwenlong_jax.rl.dynamic_sampling import varying_groups
from qwenlong_jax.rl.sft_step import pack_sft_rows
from qwenlong_jax.rollout import PREFILL_CHUNK, rl_step_shapes, rollout
from qwenlong_jax.eval.sweep import accuracy_by_length
from qwenlong_jax.train_state import TrainState, make_optimizer, with_lr
from qwenlong_jax.workdir_lock import WorkdirLock
from qwenlong_jax.run_setup import exec_overrides, model_config, phase_steps, tokenizer_path, validate_run



class TrainingError(RuntimeError):
    """A run that cannot go on (e.g. K non-finite steps in a row); a checkpoint was written."""


class Trainer:
    def __init__(self, cfg: Config, workdir: str, *, judge=None, stop_after_steps: int | None = None,
                 quiet: bool = False, devices=None):
        self.cfg, self.workdir, self.quiet = cfg, workdir, quiet
        self.stop_after_steps = stop_after_steps  # test hook: stop (with a checkpoint) after N steps
        self._stop_requested = False
        paths.makedirs(workdir)
        if cfg.distributed:
            distributed.initialize(cfg.coordinator_address, cfg.num_processes, cfg.process_id)
        try:
            self.mesh = sharding.make_mesh(cfg.mesh, devices)  # devices: all by default (tests pass a subset)
        except ValueError as e:  # mesh sizes that do not match the devices: a config error
            raise config_lib.ConfigError(str(e)) from None
        self.tok_path = tokenizer_path(cfg)
        try:
            self.tok = load_tokenizer(self.tok_path)
        except (ValueError, OSError, RuntimeError) as e:  # missing, not a tokenizer: one line
            raise config_lib.ConfigError(f"tokenizer ({'data.tokenizer' if cfg.data.tokenizer else 'from the model'}"
                                         f" {self.tok_path}): {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                                         ) from None
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
        for p, recs in zip(cfg.phases, self.per_phase):  # before compiling, not at the phase's start
            if not recs:
                pool = self.data.sft if p.kind == "sft" else self.data.train
                raise config_lib.ConfigError(
                    f"phases[{p.name}]: no {'SFT (with a response) ' if p.kind == 'sft' else ''}example has a "
                    f"prompt length in ({p.min_input}, {p.max_input}] tokens ({len(pool)} loaded"
                    f"{'; ' + self.data.report if self.data.report else ''}); check data files or the phase's range")
        self.tx = make_optimizer(cfg.optim)
        self._prompt_cache: dict[str, list[int]] = {}

    # --- setup ------------------------------------------------------------------------------
    def _make_judge(self):
        j = self.cfg.judge
        if not j.url:
            return None
        if j.api_key_env and j.api_key_env not in os.environ:
            raise config_lib.ConfigError(
                f"judge.api_key_env: ${j.api_key_env} is not set; export it, or pass "
                "--config.judge.api_key_env='' for an endpoint that needs no key")
        try:
            return rewards.OpenAIJudge(rewards.JudgeConfig(
                base_url=j.url, model=j.model, api_key_env=j.api_key_env or None,
                max_concurrency=j.max_concurrency, timeout_s=j.timeout_s, max_retries=j.retries))
        except ValueError as e:  # e.g. a url without http(s)://
            raise config_lib.ConfigError(f"judge: {e}") from None

    def _init_state(self) -> TrainState:
        m = self.cfg.model
        if m.init_from:
            try:
                mcfg, params = models.load_hf_checkpoint(paths.local_copy(m.init_from), jnp.dtype(m.param_dtype),
                                                         mesh=self.mesh, overrides=exec_overrides(m))
            except models.CheckpointError:
                raise
            except (OSError, ValueError, RuntimeError) as e:  # e.g. a corrupt safetensors header: one line
                raise models.CheckpointError(
                    f"model.init_from {m.init_from}: cannot read the checkpoint "
                    f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
            assert mcfg == self.mcfg, (mcfg, self.mcfg)  # model_config() read the same config.json
        else:
            params = jax.jit(lambda k: models.init_params(self.mcfg, k), out_shardings=self.p_shard)(
                jax.random.key(self.cfg.seed))
        # Moments laid out like their parameters (left to propagation, XLA:TPU replicates them).
        create = lambda p: TrainState.create(p, self.tx)  # noqa: E731
        out_sh = step_fns.state_shardings(jax.eval_shape(create, params), self.p_shard, self.mesh)
        state = jax.jit(create, out_shardings=out_sh)(params)
        if self.cfg.rl.kl_coef and any(p.kind == "rl" for p in self.cfg.phases):
            state = state.replace(ref_params=self._reference(state.params))
        return state

    def _reference(self, params):
        """The KL reference: the checkpoint rl.ref_from, else a copy of `params` (a phase's start)."""
        ref_from = self.cfg.rl.ref_from
        if not ref_from:
            return jax.tree.map(jnp.copy, params)  # distinct buffers: the state is donated
        m = self.cfg.model
        rcfg, ref = models.load_hf_checkpoint(paths.local_copy(ref_from), jnp.dtype(m.param_dtype), mesh=self.mesh,
                                              overrides=exec_overrides(m))
        if rcfg != self.mcfg:
            raise config_lib.ConfigError(f"rl.ref_from={ref_from}: its model config differs from the trained "
                                         "model's (the reference must share the architecture)")
        return ref

    def _prompt(self, rec) -> list[int]:
        if rec.id not in self._prompt_cache:
            self._prompt_cache[rec.id] = self.tok.chat_prompt(rec.prompt)
        return self._prompt_cache[rec.id]

    # --- jitted steps, built per phase (step_fns: one definition with the compile check) -----
    def _rows_sharding(self, ndim_lead: int, ndim_tail: int):
        return step_fns.rows_sharding(self.mesh, ndim_lead, ndim_tail)

    @functools.lru_cache(maxsize=None)
    def _sft_fn(self):
        return step_fns.sft_update_fn(self.mcfg, self.tx, self.mesh, self._state_sharding)

    @functools.lru_cache(maxsize=None)
    def _grpo_fns(self, ls: grpo_step.LossSettings):
        return step_fns.grpo_fns(self.mcfg, ls, self.tx, self.mesh, self._state_sharding)

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
        lock = WorkdirLock(self.workdir).acquire() if jax.process_index() == 0 else None
        try:
            return self._run()
        finally:
            if lock is not None:
                lock.release()

    def _resume_check(self, state, meta) -> dict | None:
        """A restored state that cannot make progress ends the run here, in one line, instead of
        looping: a phase whose steps are all done moves on; a finished run returns its summary;
        a state already over the non-finite limit is a TrainingError saying what to do."""
        cfg = self.cfg
        while meta["phase_index"] < len(cfg.phases) and meta["phase_step"] >= phase_steps(
                cfg.phases[meta["phase_index"]], len(self.per_phase[meta["phase_index"]])):
            meta.update(phase_index=meta["phase_index"] + 1, phase_step=0, phase_data=None)
        bad = int(jax.device_get(state.nonfinite_in_a_row))
        if bad >= cfg.optim.max_nonfinite_in_a_row:
            raise TrainingError(
                f"the checkpoint at step {meta['step']} in {self.workdir}/checkpoints already ends with {bad} "
                f"non-finite steps in a row (optim.max_nonfinite_in_a_row={cfg.optim.max_nonfinite_in_a_row}), "
                "so resuming would stop again at once; start over in a new --workdir (e.g. with a lower "
                "optim.lr), or raise optim.max_nonfinite_in_a_row to continue from its last good params")
        if meta["phase_index"] >= len(cfg.phases):
            spath = paths.join(self.workdir, "summary.json")
            if paths.exists(spath):
                if not self.quiet:
                    print(f"the run in {self.workdir} already finished at step {meta['step']}; nothing to do "
                          "(use a new --workdir to train again)")
                return {**json.loads(paths.read_text(spath)), "already_finished": True}
        return None

    def _run(self) -> dict:
        cfg = self.cfg
        t_start = time.time()
        ckpt = Checkpointer(paths.join(self.workdir, "checkpoints"), keep=cfg.keep_checkpoints)
        state = self._init_state()
        self._state_sharding = jax.tree.map(lambda x: x.sharding, state)
        meta = {"phase_index": 0, "phase_step": 0, "step": 0, "phase_data": None,
                "difficulty": Difficulty().state(), "evals": []}
        restored = ckpt.restore_latest(abstract_like(state))
        if restored is not None:
            _, state, meta = restored
            try:
                done = self._resume_check(state, meta)
            except TrainingError:
                ckpt.close()
                raise
            if done is not None:
                ckpt.close()
                return done
            if not self.quiet:
                print(f"resumed from step {meta['step']} (phase {cfg.phases[meta['phase_index']].name})"
                      if meta["phase_index"] < len(cfg.phases) else f"resumed a finished run at step {meta['step']}")
        difficulty = Difficulty.from_state(meta["difficulty"])
        pi = jax.process_index()
        writer = MetricsWriter(self.workdir if pi == 0 else paths.join(self.workdir, f"process_{pi}"),
                               resume_step=meta["step"], enabled=pi == 0 or cfg.log_all_processes,
                               tensorboard=pi == 0)
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        step = meta["step"]
        steps_this_run = 0

        def save():
            meta["step"] = step
            meta["difficulty"] = difficulty.state()
            ckpt.save(step, state, meta)
            writer.flush()  # the steps up to a checkpoint survive a kill -9 in TensorBoard too

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
                    writer.write(step, phase.name, {**metrics, "lr": float(lr), **{
                        f"data/{k2}": float(v) for k2, v in self.data.counts.items()}})
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
                f"{self.workdir}/checkpoints. Lower optim.lr or check the data, and start again in a new "
                "--workdir (a rerun here stops at once: the checkpoint is over the limit).")

    def _finish(self, state, meta, seconds: float) -> dict:
        export = paths.join(self.workdir, "hf")
        if self.cfg.export_hf:
            export_hf(export, self.mcfg, state.params, self.tok, self.tok_path)
        plots = plot_run(self.workdir) if jax.process_index() == 0 else []
        evals = meta["evals"]
        summary = {"steps": meta["step"], "minutes": round(seconds / 60, 2), "evals": evals,
                   "export": export if self.cfg.export_hf else None, "plots": plots,
                   "data": dict(self.data.counts)}  # rows skipped / dropped, by reason
        if jax.process_index() == 0:
            paths.write_text(paths.join(self.workdir, "summary.json"), json.dumps(summary, indent=2))
        return summary
