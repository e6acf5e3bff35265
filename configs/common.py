"""Shared config parts (helpers, not inheritance): the recipe's hyper-parameters as ConfigDicts."""

from __future__ import annotations

import ml_collections


def recipe_rl(**overrides) -> ml_collections.ConfigDict:
    """QwenLong-L1 reference RL settings (docs/recipe.md): G=8, clip 0.2/0.2, token-mean, entropy
    0.001, no KL, DAPO dynamic sampling (10 rounds), overlong buffer 1000, T=0.7, top-p 0.95."""
    rl = ml_collections.ConfigDict(
        dict(
            group_size=8,
            clip_low=0.2,
            clip_high=0.2,
            loss_agg="token-mean",
            normalize_std=True,
            entropy_coeff=0.001,
            kl_coef=0.0,
            kl_type="low_var_kl",
            ref_from="",
            dynamic_sampling=True,
            max_gen_rounds=10,
            gen_batch=0,
            mini_batch=32,
            micro_batch=0,
            loss_scope="mini_batch",
            token_budget=0,
            rollout_batch=0,
            epochs=1,
            tis_cap=0.0,
            overlong_buffer=1000,
            overlong_factor=1.0,
            temperature=0.7,
            top_p=0.95,
            top_k=0,
            # rollout schedule, same samples token for token (docs/rollout_performance.md): "lockstep"
            # or "group_refill" (a prompt slot refilled as soon as its G samples are done)
            sampler="lockstep",
        )
    )
    rl.update(overrides)
    return rl


def recipe_optim(**overrides) -> ml_collections.ConfigDict:
    """AdamW, lr 2e-6 constant, weight decay 0.01, grad clip 1.0."""
    o = ml_collections.ConfigDict(
        dict(
            lr=2e-6,
            weight_decay=0.01,
            grad_clip=1.0,
            b1=0.9,
            b2=0.999,
            warmup_steps=0,
            schedule="constant",
            max_nonfinite_in_a_row=5,
        )
    )
    o.update(overrides)
    return o


def phase(
    order: int,
    kind: str,
    max_input: int,
    max_output: int,
    *,
    min_input: int = 0,
    steps: int = 0,
    epochs: int = 1,
    batch: int = 128,
    lr: float = 0.0,
    retrospective: bool = True,
    micro_rows: int = 0,
):
    return ml_collections.ConfigDict(
        dict(
            order=order,
            kind=kind,
            max_input=max_input,
            max_output=max_output,
            min_input=min_input,
            steps=steps,
            epochs=epochs,
            batch=batch,
            lr=lr,
            retrospective=retrospective,
            micro_rows=micro_rows,
        )
    )


def paper_phases(sft_steps: int = 0) -> ml_collections.ConfigDict:
    """Warm-up SFT (inputs up to 20K, 3 epochs, batch 128, lr 5e-6) then two RL phases: inputs up to
    20K then 60K, outputs up to 10K (the paper's progressive context scaling), 1 epoch each: one
    pass over the phase's examples in generation batches (rl.gen_batch prompts per step)."""
    return ml_collections.ConfigDict(
        dict(
            sft=phase(0, "sft", 20_000, 10_000, steps=sft_steps, epochs=1 if sft_steps else 3, batch=128, lr=5e-6),
            rl_20k=phase(1, "rl", 20_000, 10_000, batch=128),
            rl_60k=phase(2, "rl", 60_000, 10_000, min_input=20_000, batch=128),
        )
    )


def base(**top) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(
        dict(
            size="tiny",
            hf_path="",
            init_from="",
            vocab_size=0,
            param_dtype="float32",
            dtype="float32",
            attention_impl="xla",
            remat="none",
            scan_layers=True,
            logits_chunk=1024,
            rope_scaling=ml_collections.ConfigDict(
                dict(factor=0.0, original_max_position_embeddings=0, beta_fast=32.0, beta_slow=1.0)
            ),
        )
    )
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, sequence=1))
    c.optim = recipe_optim()
    c.rl = recipe_rl()
    c.data = ml_collections.ConfigDict(
        dict(
            train_files=(),
            sft_files=(),
            eval_files=(),
            bad_records="error",
            tokenizer="",
            shuffle_seed=0,
            synthetic_seed=1234,
            synthetic_per_phase=256,
            synthetic_families=("lookup", "multihop"),
            synthetic_attributes=8,
            eval_lengths=(),
            eval_per_length=32,
            eval_max_new_tokens=64,
        )
    )
    c.retro = ml_collections.ConfigDict(dict(hard_threshold=0.0, max_weight=64.0, hard_fraction=0.25))
    c.judge = ml_collections.ConfigDict(
        dict(
            url="",
            model="Qwen2.5-1.5B-Instruct",
            api_key_env="JUDGE_API_KEY",
            timeout_s=30.0,
            max_concurrency=32,
            retries=2,
        )
    )
    c.phases = ml_collections.ConfigDict()
    c.seed = 0
    c.checkpoint_every = 50
    c.keep_checkpoints = 3
    c.eval_every = 0
    c.export_hf = True
    c.distributed = False
    c.coordinator_address = ""
    c.num_processes = 0
    c.process_id = -1
    c.log_all_processes = False
    c.update(top)
    return c


def r1_distill_32b(mesh: dict, smoke: bool = False) -> ml_collections.ConfigDict:
    """R1-Distill-Qwen-32B with the paper's phases, bf16 compute, full remat, on `mesh`
    (data, fsdp, tensor, sequence); `smoke` shrinks it to the tiny model on 8 CPU devices
    (data=2, fsdp=2, tensor=2).

    What makes it fit (python -m qwenlong_jax.plan): packed rows of up to 140K tokens are split
    over mesh.sequence with ring attention; one packed row (SFT) or group (RL) per batch shard
    per forward/backward, gradients accumulated over the rest (phases.sft.micro_rows,
    rl.micro_batch); prompts sampled two per chip of the sampler's batch axes (data, fsdp and
    sequence: a decode step has nothing for the sequence axis to split) at a time
    (rl.rollout_batch) so the KV cache of 128 prompts x 8 responses x 70K tokens never exists at
    once."""
    c = base()
    c.model.update(
        size="r1-distill-qwen-32b",
        param_dtype="float32",
        dtype="bfloat16",
        attention_impl="ring",
        remat="full",
        scan_layers=True,
        logits_chunk=2048,
    )
    # The paper's YaRN: factor 4 over the 32,768 positions the model was trained on (RL rows
    # reach ~70K positions, evaluation 120K).
    c.model.rope_scaling.update(factor=4.0, original_max_position_embeddings=32768)
    c.mesh.update(data=1, sequence=1)
    c.mesh.update(**mesh)
    c.phases = paper_phases()
    c.distributed = True
    c.checkpoint_every = 10
    if smoke:
        c.model.update(size="tiny", dtype="float32", attention_impl="xla", remat="none")
        c.mesh.update(data=2, fsdp=2, tensor=2, sequence=1)
        c.distributed = False
    shards = c.mesh.data * c.mesh.fsdp
    c.rl.micro_batch = shards
    c.rl.rollout_batch = 2 * shards * c.mesh.sequence
    c.rl.gen_batch = 3 * c.phases.rl_20k.batch  # the recipe: 384 prompts generated per 128 trained
    c.phases.sft.micro_rows = shards
    return c
