"""Train the embedded sentencepiece tokenizer on synthetic text (reproduces the shipped file).

    python -m qwenlong_jax.data.train_tokenizer --out qwenlong_jax/assets/tokenizer

The corpus comes from data/synthetic.py and data/pretrain.py (`corpus_for_tokenizer`), so changing
the generator changes the trained model: tests/test_tokenizer.py checks that training reproduces the
shipped file byte for byte, and a base checkpoint trained with one tokenizer is only valid with that tokenizer.
"""

from __future__ import annotations

import io
import os
import random

from qwenlong_jax.data.pretrain import pretrain_text
from qwenlong_jax.data.prompt import build_prompt
from qwenlong_jax.data.synthetic import FAMILIES, NAMES, make_example
from qwenlong_jax.data.tokenizer import ENDOFTEXT, PAD, SPM_SYMBOLS


def synthetic_pieces() -> tuple[str, ...]:
    """The synthetic task's names and values (100-999), each with its leading space, as single
    pieces: "the code of SEPA is 472 ." is 7 tokens, and lookup is a one-token match (SEPA)
    and a one-token copy (472).

    Why (measured here): with values spelled as 4 pieces (space + 3 digits), a
    1M-parameter model pretrained for hours never learned lookup: every fact shares the " "
    piece before its value and there are only 10 digits, so a previous-token induction match
    is ambiguous everywhere. (The names were already single BPE pieces; listing them here keeps
    them so whatever the corpus.) The same model forms an induction head on single-token
    repeats in ~225 steps."""
    return tuple(f"\u2581{n}" for n in NAMES) + tuple(f"\u2581{v}" for v in range(100, 1000))


def corpus_for_tokenizer(seed: int = 0, num_docs: int = 400) -> list[str]:
    """Text the embedded tokenizer is trained on: documents, QA lines, prompts and SFT traces.
    Length here is counted in words (the tokenizer does not exist yet)."""
    words = lambda s: len(s.split())  # noqa: E731
    rng = random.Random(seed)
    out = []
    for i in range(num_docs):
        # restate=0: the corpus the shipped tokenizer was trained on (changing it changes ids).
        out.append(pretrain_text(rng, rng.choice([60, 120, 250]), words, restate=0.0))
        ex = make_example(seed, i, FAMILIES[i % 4], 80, words)
        out.append(build_prompt(ex["document"], ex["question"]))
        out.append(ex["response"])
    return out


def train_sentencepiece(out_dir: str, vocab_size: int = 1536, seed: int = 0) -> str:
    """Train the embedded sentencepiece model on synthetic text; returns the .model path.

    BPE with the chat symbols and `synthetic_pieces` as user-defined pieces, split digits for
    every other number (a 4-digit sum is a value piece plus a digit), byte fallback (any text
    encodes), identity normalisation and no dummy prefix (exact round trips, newlines kept).
    """
    import sentencepiece as spm

    lines: list[str] = []
    for text in corpus_for_tokenizer(seed) + [build_prompt("x", "y")]:
        lines.extend(line for line in text.split("\n") if line)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        user_defined_symbols=list(SPM_SYMBOLS) + list(synthetic_pieces()),
        pad_id=0,
        pad_piece=PAD,
        unk_id=1,
        bos_id=-1,
        eos_id=2,
        eos_piece=ENDOFTEXT,
        num_threads=1,
        minloglevel=2,
    )
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "spm.model")
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return path


if __name__ == "__main__":  # the command line: qwenlong_jax/cli/train_tokenizer.py
    import importlib  # by name: that module imports this one (as a library, not as __main__)

    cli = importlib.import_module("qwenlong_jax.cli.train_tokenizer")
    cli.flags.run(cli.main)
