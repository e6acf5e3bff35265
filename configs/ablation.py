"""The paper's ablation in miniature (issue 9): the embedded default's phases, one variant per arg.

    python -m qwenlong_jax.ablation --out runs/ablation          # all variants, resumable
    python -m qwenlong_jax.train --config configs/ablation.py:rl_progressive \\
        --config.model.init_from=runs/ablation/sft_only/hf --workdir runs/ablation/rl_progressive/seed0

Variants (configs/default.py supplies every number not named here):
  sft_only              the SFT warm-up alone, from the shipped base; its HF export is the
                        starting point of every RL variant (trained once, reused)
  rl_single_stage       one RL phase at the longest input range, (320, 640] prompt tokens
  rl_progressive        RL (160, 320] then (320, 640], no retrospective sampling
  rl_progressive_retro  the same with hard examples of the first RL phase resampled in the
                        second (the default recipe)

Same RL token budget: the single stage gets as many steps as make its estimated tokens
(prompts at the middle of the input range + G responses at the output cap, per group) equal
the progressive variants' two phases. The RL variants read `model.init_from`, which the
ablation runner points at the sft_only export; by default it is the shipped base.
"""
from configs import default

VARIANTS = ("sft_only", "rl_single_stage", "rl_progressive", "rl_progressive_retro")


def rl_tokens(ph, group_size: int) -> float:
    """Estimated tokens an RL phase processes: per group one prompt (middle of the input range)
    and `group_size` responses at the output cap."""
    return ph.steps * ph.batch * ((ph.min_input + ph.max_input) / 2 + group_size * ph.max_output)


def get_config(arg: str | None = None):
    variant = arg or "rl_progressive_retro"
    if variant not in VARIANTS:
        raise ValueError(f"configs/ablation.py: unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    c = default.get_config()
    sft, short, long = c.phases.sft, c.phases.rl_320, c.phases.rl_640
    if variant == "sft_only":
        c.phases = dict(sft=sft)
        return c
    if variant == "rl_single_stage":
        G = c.rl.group_size
        budget = rl_tokens(short, G) + rl_tokens(long, G)
        long.steps = max(1, round(budget / rl_tokens(long, G) * long.steps))
        long.order = 0
        c.phases = dict(rl_640=long)
        return c
    short.order, long.order = 0, 1
    long.retrospective = variant == "rl_progressive_retro"
    c.phases = dict(rl_320=short, rl_640=long)
    return c
