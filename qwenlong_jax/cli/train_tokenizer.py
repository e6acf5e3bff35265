"""Train the embedded sentencepiece tokenizer on synthetic text (reproduces the shipped file).

    python -m qwenlong_jax.data.train_tokenizer --out qwenlong_jax/assets/tokenizer

Writes OUT/spm.model (qwenlong_jax/data/train_tokenizer.py: the corpus, and why changing the
synthetic generator changes the trained model).
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags as absl_flags

from qwenlong_jax.cli import flags
from qwenlong_jax.data.tokenizer import load_sentencepiece
from qwenlong_jax.data.train_tokenizer import train_sentencepiece


def main(argv: Sequence[str] | None = None) -> None:
    cmd = flags.Command(__name__, __doc__, argv)
    absl_flags.DEFINE_string("out", None, "write OUT/spm.model", flag_values=cmd.fv)
    absl_flags.DEFINE_integer("vocab_size", 1536, "vocabulary size", flag_values=cmd.fv)
    absl_flags.DEFINE_integer("seed", 0, "corpus seed", flag_values=cmd.fv)
    try:
        args = cmd.parse(required=("out",))
    except flags.FlagError as e:
        flags.fail(e)
    path = train_sentencepiece(args.out, args.vocab_size, args.seed)
    tok = load_sentencepiece(path)
    print(f"wrote {path}: vocab {tok.vocab_size}, eos {tok.eos_ids}, </think> {tok.think_end_id}")
