"""Run the paper's ablation in miniature over several seeds and judge its claims.

    python -m qwenlong_jax.ablation --out runs/ablation                  # 3 seeds (0,1,2)
    python -m qwenlong_jax.ablation --out runs/headline --headline       # the default run, 3 seeds

Ablation: trains `sft_only` once per seed (configs/ablation.py), then every RL variant's seed k
from that seed's HF export; each run is a normal training workdir (OUT/<variant>/seed<k>), so
re-running the command resumes unfinished runs and skips finished ones. Writes OUT/results.json,
OUT/table.md and OUT/ablation.png, and prints each claim's verdict with its gap and standard
error (qwenlong_jax/experiments/ablation_runs.py).

Headline (`--headline`): trains configs/default.py once per seed with `--eval_per_length`
held-out examples per length and judges "RL after SFT beats SFT alone" at every length. Writes
OUT/headline.json, OUT/headline.md and OUT/headline.png (qwenlong_jax/experiments/headline.py).

Statistics and verdicts: qwenlong_jax/experiments/stats.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags as absl_flags

from qwenlong_jax.cli import flags, int_list_flag
from qwenlong_jax.experiments import ablation_runs, headline


def main(argv: Sequence[str] | None = None) -> dict:
    cmd = flags.Command(__name__, __doc__, argv)
    fv = cmd.fv
    absl_flags.DEFINE_string("out", "runs/ablation", "output directory (re-running resumes)", flag_values=fv)
    int_list_flag.DEFINE_integers("seeds", [0, 1, 2], "comma-separated seeds", flag_values=fv)
    absl_flags.DEFINE_list("variants", list(ablation_runs.RL_VARIANTS), "RL variants to run", flag_values=fv)
    absl_flags.DEFINE_boolean(
        "headline", False, "train configs/default.py per seed and judge RL vs SFT (no ablation)", flag_values=fv
    )
    absl_flags.DEFINE_integer("eval_per_length", 96, "--headline: held-out examples per length", flag_values=fv)
    absl_flags.DEFINE_boolean("quiet", False, "no progress bars", flag_values=fv)
    absl_flags.DEFINE_boolean("tiny", False, "a few steps per run: checks the plumbing only", flag_values=fv)
    try:
        args = cmd.parse()
    except flags.FlagError as e:
        flags.fail(e)
    bad = [v for v in args.variants if v not in ablation_runs.RL_VARIANTS]
    if bad or not args.seeds:
        flags.fail(f"--variants must be among {', '.join(ablation_runs.RL_VARIANTS)} (got {bad}) and --seeds non-empty")
    if args.headline:
        return headline.run_headline(args.out, args.seeds, args.eval_per_length, args.tiny, args.quiet)
    return ablation_runs.run_ablation(args.out, args.seeds, args.variants, args.tiny, args.quiet)
