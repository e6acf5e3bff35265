"""Write a synthetic long-document QA dataset as plain JSONL (format (b), plus an SFT `response`).

    python -m qwenlong_jax.data.make_synthetic --out data/syn --num 1000 --doc_tokens 64,256 \
        --seed 0 [--families lookup,multihop,docmath,choice] [--attributes 8] [--tokenizer PATH]
        [--name train]

Writes OUT/NAME.jsonl (one row per example: id, data_source, document, question, answer,
response) and OUT/NAME.meta.json (the arguments and measured document lengths). Document
lengths are measured with the tokenizer (the embedded one by default), so pass the tokenizer of
the model the data are for. Rows are deterministic in (seed, index).
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Sequence

from absl import flags as absl_flags

from qwenlong_jax.cli import flags
from qwenlong_jax.data import synthetic
from qwenlong_jax.data.readers import write_jsonl
from qwenlong_jax.data.tokenizer import load_tokenizer


def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def main(argv: Sequence[str] | None = None) -> dict:
    cmd = flags.Command(__name__, __doc__, argv)
    fv = cmd.fv
    absl_flags.DEFINE_string("out", None, "output directory", flag_values=fv)
    absl_flags.DEFINE_integer("num", None, "number of examples", flag_values=fv)
    absl_flags.DEFINE_string(
        "doc_tokens", "256", "document length(s) in tokens, comma separated (cycled)", flag_values=fv
    )
    absl_flags.DEFINE_integer("seed", 0, "rows are deterministic in (seed, index)", flag_values=fv)
    absl_flags.DEFINE_string(
        "families",
        ",".join(synthetic.FAMILIES),
        f"comma separated, from {','.join(synthetic.FAMILIES)}",
        flag_values=fv,
    )
    absl_flags.DEFINE_string("tokenizer", None, "HF dir or sentencepiece model (default: embedded)", flag_values=fv)
    absl_flags.DEFINE_integer(
        "attributes",
        len(synthetic.ATTRIBUTES),
        "how many attributes facts use (1 = the name alone is the key)",
        flag_values=fv,
    )
    absl_flags.DEFINE_string("name", "train", "file name stem", flag_values=fv)
    try:
        args = cmd.parse(required=("out", "num"))
    except flags.FlagError as e:
        flags.fail(e)
    families = _csv(args.families)
    bad = [f for f in families if f not in synthetic.FAMILIES]
    if bad or not families:
        flags.fail(f"--families: unknown {bad}; choose from {synthetic.FAMILIES}")
    try:
        lengths = [int(x) for x in _csv(args.doc_tokens)]
    except ValueError:
        lengths = []
    if not lengths or min(lengths) < 16:
        flags.fail(f"--doc_tokens must be integers >= 16, got {args.doc_tokens!r}")
    if args.num <= 0:
        flags.fail(f"--num must be positive, got {args.num}")
    tok = load_tokenizer(args.tokenizer)
    chosen = typing.cast("list[synthetic.Family]", families)  # each checked against FAMILIES above
    rows = synthetic.make_dataset(args.seed, args.num, lengths, tok.count, chosen, args.attributes)
    path = os.path.join(args.out, f"{args.name}.jsonl")
    write_jsonl(path, rows)
    measured = [tok.count(r["document"]) for r in rows]
    meta = {
        "argv": vars(args),
        "num": len(rows),
        "path": path,
        "doc_tokens_min": min(measured),
        "doc_tokens_max": max(measured),
        "doc_tokens_mean": sum(measured) / len(measured),
        "data_sources": sorted({r["data_source"] for r in rows}),
    }
    with open(os.path.join(args.out, f"{args.name}.meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(
        f"wrote {len(rows)} rows to {path}; document tokens {meta['doc_tokens_min']}-"
        f"{meta['doc_tokens_max']} (mean {meta['doc_tokens_mean']:.0f})"
    )
    return meta
