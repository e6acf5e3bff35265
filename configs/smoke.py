"""The default pipeline shrunk to run in under two minutes (used by the tests).

    python -m qwenlong_jax.train --config configs/smoke.py --workdir /tmp/smoke

SFT -> two RL phases (the second with retrospective sampling) -> checkpoint -> HF export,
on a randomly initialised tiny model (no base checkpoint needed).
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
    return c
