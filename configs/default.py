"""The embedded default: the QwenLong-L1 recipe in miniature, on CPU, in under 20 minutes.

    python -m qwenlong_jax.train                      # this config
    python -m qwenlong_jax.train --config configs/default.py --workdir runs/default

Starts from the tiny base checkpoint shipped in qwenlong_jax/assets/base (made by
`python -m qwenlong_jax.pretrain`, see its pretrain.json), then runs the recipe on synthetic
long-document QA: a short SFT warm-up on documents of ~100 tokens, and two RL phases of
growing input length, (160, 320] then (320, 640] prompt tokens — the longest 4x the SFT
length — with GRPO (G=8), DAPO dynamic sampling and retrospective sampling of hard examples.
Held-out accuracy is measured at 128, 256 and 512 document tokens after each phase.

Departures from the paper's numbers, all for scale: learning rates (the paper's 5e-6 / 2e-6
are for a 32B model), batch 8 prompts, outputs capped at 48 tokens (overlong buffer 8).
"""
import os

from configs import common

BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "qwenlong_jax", "assets", "base")


def get_config(arg: str | None = None):
    c = common.base()
    c.model.update(size="tiny", init_from=BASE, logits_chunk=512)
    c.mesh.update(data=1)
    c.optim.update(lr=5e-5)
    c.rl.update(group_size=8, mini_batch=8, overlong_buffer=8, clip_high=0.28, entropy_coeff=0.0,
                max_gen_rounds=3)
    c.phases = dict(
        sft=common.phase(0, "sft", 160, 48, steps=40, batch=16, lr=3e-4),
        rl_320=common.phase(1, "rl", 320, 48, min_input=160, steps=24, batch=8),
        rl_640=common.phase(2, "rl", 640, 48, min_input=320, steps=24, batch=8),
    )
    c.data.update(synthetic_per_phase=256, synthetic_attributes=1, eval_lengths=(128, 256, 512), eval_per_length=48,
                  eval_max_new_tokens=48)
    c.checkpoint_every = 10
    return c
