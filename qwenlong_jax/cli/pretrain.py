"""Make the tiny base checkpoint the embedded default starts from.

    python -m qwenlong_jax.pretrain --out /tmp/s1 --minutes 7 --copy_fraction 1.0 ...   # stage 1 of 3

(docs/results.md, "The tiny base checkpoint", lists the three stages that made the shipped base.)
Next-token pretraining of a small Qwen2-shaped model from scratch on the synthetic stream of
data/pretrain.py, time-boxed (`--minutes`) or step-boxed (`--steps`), writing an HF checkpoint,
the tokenizer, `pretrain.json` (this command, steps, tokens, minutes, final loss) and
`metrics.jsonl` into `--out` every `--save_every` steps and at the end
(qwenlong_jax/pretraining/loop.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags as absl_flags

from qwenlong_jax.cli import flags, int_list_flag
from qwenlong_jax.pretraining.settings import PretrainSettings


def parse_args(argv: Sequence[str] | None = None) -> PretrainSettings:
    """The command line as PretrainSettings (defaults: PretrainSettings'); FlagError, one line."""
    cmd = flags.Command(__name__, __doc__, argv)
    d, fv = PretrainSettings, cmd.fv
    absl_flags.DEFINE_string("out", d.out, "output directory", flag_values=fv)
    absl_flags.DEFINE_string("tokenizer", d.tokenizer, "tokenizer path ('' = the embedded one)", flag_values=fv)
    absl_flags.DEFINE_float("minutes", d.minutes, "wall-clock budget", flag_values=fv)
    absl_flags.DEFINE_integer("steps", d.steps, "step budget (overrides --minutes when > 0)", flag_values=fv)
    absl_flags.DEFINE_integer("seq_len", d.seq_len, "tokens per packed row", flag_values=fv)
    absl_flags.DEFINE_integer("rows", d.rows, "packed rows per step", flag_values=fv)
    absl_flags.DEFINE_integer("max_doc_tokens", d.max_doc_tokens, "the curriculum's longest document", flag_values=fv)
    absl_flags.DEFINE_float("lr", d.lr, "peak learning rate (cosine to 0.1x)", flag_values=fv)
    absl_flags.DEFINE_integer("warmup", d.warmup, "warm-up steps", flag_values=fv)
    absl_flags.DEFINE_integer("seed", d.seed, "parameter and data seed", flag_values=fv)
    absl_flags.DEFINE_integer("save_every", d.save_every, "steps between saves", flag_values=fv)
    absl_flags.DEFINE_integer("questions", d.questions, "QA lines per document", flag_values=fv)
    absl_flags.DEFINE_float("restate", d.restate, "share of QA lines restating the fact", flag_values=fv)
    absl_flags.DEFINE_integer(
        "attributes", d.attributes, "fact attributes (1: the name alone is the key)", flag_values=fv
    )
    absl_flags.DEFINE_float("chat_fraction", d.chat_fraction, "share of chat-formatted SFT examples", flag_values=fv)
    absl_flags.DEFINE_integer(
        "qa_reserve",
        d.qa_reserve,
        "tokens of the document given up per QA line; 0 = QA lines on top (dense)",
        flag_values=fv,
    )
    absl_flags.DEFINE_float(
        "copy_fraction",
        d.copy_fraction,
        "share of examples that are copy drills (a random sequence, then again)",
        flag_values=fv,
    )
    absl_flags.DEFINE_enum(
        "loss_on",
        d.loss_on,
        ["all", "answers"],
        "targets: every token, or only QA lines and chat responses (data/pretrain.py)",
        flag_values=fv,
    )
    absl_flags.DEFINE_string(
        "init_from", d.init_from, "continue from an HF checkpoint (fresh optimizer)", flag_values=fv
    )
    absl_flags.DEFINE_integer("hidden_size", d.hidden_size, "model width", flag_values=fv)
    absl_flags.DEFINE_integer("num_layers", d.num_layers, "model depth", flag_values=fv)
    int_list_flag.DEFINE_integers(
        "probe_lengths",
        list(d.probe_lengths),
        "document lengths of the held-out lookup probe logged at each save",
        flag_values=fv,
    )
    args = vars(cmd.parse())
    return PretrainSettings(**{**args, "probe_lengths": tuple(args["probe_lengths"])})


def main(argv: Sequence[str] | None = None) -> dict:
    try:
        settings = parse_args(argv)
    except flags.FlagError as e:
        flags.fail(e)
    from qwenlong_jax.pretraining.loop import pretrain

    command = " ".join(["python -m qwenlong_jax.pretrain", *flags.arguments(argv)])
    return pretrain(settings, command)
