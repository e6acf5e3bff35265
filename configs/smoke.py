"""The default pipeline shrunk to run in under two minutes (used by the tests).

    python -m qwenlong_jax.train --config configs/smoke.py --workdir /tmp/smoke

SFT -> two RL phases (the second with retrospective sampling) -> checkpoint -> HF export,
on a randomly initialised tiny model (no base checkpoint needed).

`configs/smoke.py:multihost` is the same run laid out for 8 devices over 2 processes (mesh
data=2 x fsdp=2 x tensor=2, batches of 4 groups); tests/test_multihost.py starts it as two
processes on this machine, each with 4 CPU devices:

    JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=4 \
      python -m qwenlong_jax.train --config configs/smoke.py:multihost --workdir /tmp/mh \
      --config.coordinator_address=localhost:1234 --config.num_processes=2 --config.process_id=0
    (and the same with --config.process_id=1)
"""

from configs import common


def get_config(arg: str | None = None):
    c = common.base()
    c.model.update(size="tiny", init_from="", logits_chunk=128)
    c.mesh.update(data=1)
    c.optim.update(lr=1e-3)
    c.rl.update(group_size=4, mini_batch=2, overlong_buffer=4, max_gen_rounds=2, entropy_coeff=0.001)
    c.phases = dict(
        sft=common.phase(0, "sft", 160, 16, steps=2, batch=4),
        rl_short=common.phase(1, "rl", 160, 16, steps=2, batch=2),
        rl_long=common.phase(2, "rl", 320, 16, min_input=160, steps=2, batch=2),
    )
    c.retro.update(hard_threshold=1.0, hard_fraction=0.5)  # everything counts as hard: exercises the pool
    c.data.update(synthetic_per_phase=8, eval_lengths=(64, 192), eval_per_length=2, eval_max_new_tokens=16)
    c.checkpoint_every = 2
    if arg == "multihost":
        c.mesh.update(data=2, fsdp=2, tensor=2)
        c.rl.update(mini_batch=4)
        for name in ("rl_short", "rl_long"):
            c.phases[name].batch = 4
        c.distributed = True
    elif arg:
        raise ValueError(f"configs/smoke.py: unknown variant {arg!r} (expected '' or 'multihost')")
    return c
