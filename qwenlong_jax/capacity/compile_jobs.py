"""The compile check's jobs: every function the run jits, built with the run's own code
(step_fns.py, the sampler) at the shapes step_shapes.py gives the trainer, on abstract inputs
(jax.ShapeDtypeStruct with the run's shardings: nothing the size of the model is allocated).
compile.py compiles them and reports.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

# Placeholder end-of-sequence id for the sampler (the tokenizer is not needed to compile: the
# eos set only changes a comparison, not a shape).
EOS_PLACEHOLDER = (1,)


@dataclasses.dataclass
class Job:
    phase: str
    fn: str
    shape: str
    build: Callable[[], Any]  # -> (jitted function, abstract args, static kwargs)
    resident_bytes: int
    plan_bytes: int | None
    knob: str


def _job(fn, args: tuple) -> tuple:
    """A Job's build(): (jitted function, abstract args, static kwargs)."""
    return fn, args, {}


def per_chip_bytes(tree, shardings) -> int:
    import jax
    import numpy as np

    total = 0
    for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
        total += int(np.prod(s.shard_shape(x.shape))) * x.dtype.itemsize
    return total


def build_jobs(spec, only_phases: Sequence[str] = ()) -> list[Job]:
    """Every jitted function of the run `spec` (a RunSpec on compile-only TPU or GPU devices), at
    its step shapes, on its abstract train state."""
    import jax
    import jax.numpy as jnp

    from qwenlong_jax.capacity import planner
    from qwenlong_jax.parallel import sharding
    from qwenlong_jax.rl import grpo_step
    from qwenlong_jax.run import step_fns
    from qwenlong_jax.run.step_shapes import heldout_shape
    from qwenlong_jax.sampling import strategies

    cfg, mesh, mcfg, tx, ls = spec.cfg, spec.mesh, spec.mcfg, spec.tx, spec.loss
    state, state_sharding = spec.abstract_state, spec.state_sharding
    opt_bytes = per_chip_bytes(state.opt_state, state_sharding.opt_state)
    backend = mesh.devices.flat[0].platform  # "tpu" | "gpu": the planner's terms differ
    estimates = {pm.phase: pm for pm in planner.estimate(spec, backend)}
    batch_axes = spec.batch_axes
    jobs: list[Job] = []

    def arr(shape, dtype, s):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=s)

    for ps in spec.phases:
        ph, s = ps.phase, ps.shapes
        if only_phases and ph.name not in only_phases:
            continue
        pm = estimates[ph.name]
        if ph.kind == "sft":
            U, rows, W = s.micro, s.rows, s.W
            sh = step_fns.rows_sharding(mesh, 1, 1)
            batch = {
                k: arr((U, rows, W), jnp.float32 if k == "loss_mask_BW" else jnp.int32, sh) for k in step_fns.SFT_KEYS
            }
            fn = step_fns.sft_update_fn(mcfg, tx, mesh, state_sharding)
            jobs.append(
                Job(
                    ph.name,
                    "update",
                    f"micro={U} rows={rows} W={W}",
                    functools.partial(_job, fn, (state, batch)),
                    0,
                    pm.resident + pm.train,
                    f"phases[{ph.name}].micro_rows, model.remat or mesh.sequence",
                )
            )
            continue
        M, U, Bm, W, R, G = s.updates, s.micro, s.rows, s.W, s.R, s.G
        Nm = Bm * G
        rows2, rows3 = step_fns.rows_sharding(mesh, 2, 1), step_fns.rows_sharding(mesh, 2, 0)
        batch = {k: arr((M, U, Bm, W), jnp.int32, rows2) for k in grpo_step.ROW_KEYS}
        batch.update(
            unpack_idx_NR=arr((M, U, Nm, R), jnp.int32, rows2),
            mask_NR=arr((M, U, Nm, R), jnp.float32, rows2),
            old_logp_NR=arr((M, U, Nm, R), jnp.float32, rows2),
            adv_N=arr((M, U, Nm), jnp.float32, rows3),
        )
        batch.update({k: arr((M, U, Nm, R), jnp.float32, rows2) for k in ls.token_keys})
        update, logp, _ = step_fns.grpo_fns(mcfg, ls, tx, mesh, state_sharding)
        shape = f"updates={M} micro={U} rows={Bm} W={W}"
        knob = "rl.micro_batch, model.remat or mesh.sequence"
        jobs.append(
            Job(
                ph.name,
                "old_logp",
                shape,
                functools.partial(
                    _job,
                    logp,
                    (state.params, {k: v for k, v in batch.items() if k not in ("old_logp_NR",) + ls.token_keys}),
                ),
                opt_bytes,
                None,
                knob,
            )
        )
        jobs.append(
            Job(
                ph.name,
                "update",
                shape,
                functools.partial(_job, update, (state, batch)),
                0,
                pm.resident + pm.train,
                knob,
            )
        )
        strategy = strategies.from_flags(cfg.rl.temperature, cfg.rl.top_p, cfg.rl.top_k, 0.0)
        if cfg.rl.sampler == "group_refill":
            jobs += refill_jobs(
                ph.name, mcfg, state.params, s.sample_B, s.S, G, R, strategy, mesh, opt_bytes, pm.resident + pm.sample
            )
        else:
            jobs.append(
                sample_job(
                    ph.name,
                    mcfg,
                    state.params,
                    s.sample_B,
                    s.S,
                    G,
                    R,
                    strategy,
                    None,
                    opt_bytes,
                    pm.resident + pm.sample,
                    "rl.rollout_batch",
                )
            )
    for L in cfg.data.eval_lengths:
        B, S = heldout_shape(int(L), cfg.data.eval_per_length, batch_axes)
        jobs.append(
            sample_job(
                f"eval@{L}",
                mcfg,
                state.params,
                B,
                S,
                1,
                cfg.data.eval_max_new_tokens,
                strategies.Greedy(),
                sharding.named(mesh, "batch", None),
                opt_bytes,
                None,
                "data.eval_max_new_tokens or data.eval_lengths",
                fn="generate",
            )
        )
    return jobs


def sample_job(
    phase, mcfg, params, B, S, G, R, strategy, batch_sharding, resident, plan_bytes, knob, fn="sample"
) -> Job:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from qwenlong_jax.run.step_shapes import PREFILL_CHUNK
    from qwenlong_jax.sampling import sampler

    def build():
        tokens = jax.ShapeDtypeStruct((B, S), jnp.int32, sharding=batch_sharding)
        lens_sh = (
            None
            if batch_sharding is None
            else jax.sharding.NamedSharding(batch_sharding.mesh, jax.sharding.PartitionSpec(batch_sharding.spec[0]))
        )
        lens = jax.ShapeDtypeStruct((B,), jnp.int32, sharding=lens_sh)
        keys = jax.eval_shape(lambda: sampler.sample_keys(0, np.arange(B), G))
        kw = dict(max_new_tokens=R, strategy=strategy, eos_ids=EOS_PLACEHOLDER, prefill_chunk=PREFILL_CHUNK)
        return sampler.sample_groups, (mcfg, params, tokens, lens, keys), kw

    return Job(phase, fn, f"B={B} S={S} G={G} R={R}", build, resident, plan_bytes, knob)


def refill_jobs(phase, mcfg, params, B, S, G, R, strategy, mesh, resident, plan_bytes) -> list[Job]:
    """rl.sampler = "group_refill" (sampling/continuous.py): its two programs at B prompt slots of
    S tokens -- "prefill", one prompt of S tokens into a slot (the longest a prefill gets), and
    "decode", one refill chunk of samplers.REFILL_CHUNK decode steps over every slot. The slots'
    layout is the one their initialiser (slot_state.init_slots) gives them on this mesh."""
    import jax
    import numpy as np

    from qwenlong_jax.run.step_shapes import PREFILL_CHUNK
    from qwenlong_jax.sampling import continuous, sampler, samplers
    from qwenlong_jax.sampling.slot_state import init_slots

    static = dict(strategy=strategy, eos_ids=EOS_PLACEHOLDER, stop_sequences=())

    def slots():
        keys_1G = jax.eval_shape(lambda: sampler.sample_keys(0, np.arange(1), G))
        with jax.set_mesh(mesh):
            compiled = init_slots.trace(mcfg, B, S, G, R, keys_1G).lower().compile()
        return jax.tree.map(
            lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
            jax.eval_shape(lambda k: init_slots(mcfg, B, S, G, R, k), keys_1G),
            compiled.output_shardings,
        )

    def prefill():
        one = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
        keys_1G = jax.eval_shape(lambda: sampler.sample_keys(0, np.arange(1), G))
        args = (mcfg, params, slots(), one((), np.int32), one((1, S), np.int32), one((1,), np.int32), keys_1G)
        return continuous.prefill_slots, args, dict(prefill_chunk=PREFILL_CHUNK, **static)

    def decode():
        args = (mcfg, params, slots(), jax.ShapeDtypeStruct((), np.bool_))
        return continuous.decode_chunk, args, dict(steps=samplers.REFILL_CHUNK, **static)

    shape, knob = f"slots={B} S={S} G={G} R={R}", "rl.rollout_batch"
    return [
        Job(phase, "prefill", f"1 prompt, {shape}", prefill, resident, plan_bytes, knob),
        Job(phase, "decode", f"{samplers.REFILL_CHUNK} steps, {shape}", decode, resident, plan_bytes, knob),
    ]
