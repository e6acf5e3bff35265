"""Make the tiny base checkpoint the embedded default starts from.

    python -m qwenlong_jax.pretrain --out /tmp/s1 --minutes 7 --copy_fraction 1.0 ...   # stage 1 of 3

(docs/results.md, "The tiny base checkpoint", lists the three stages that made the shipped base.)
Next-token pretraining of a small Qwen2-shaped model from scratch on the synthetic stream of
data/pretrain.py (documents with facts and interleaved QA lines; a quarter of the examples are
full chat-formatted SFT examples), with a length curriculum from 48 to `--max_doc_tokens`
tokens that keeps short documents in the mix. Several examples are packed per row (segment ids).
The run is time-boxed (`--minutes`) or step-boxed (`--steps`); the curriculum follows the
fraction of the budget spent. It writes an HF checkpoint (config.json + model.safetensors),
the tokenizer, `pretrain.json` (the exact command, steps, tokens, minutes, final loss) and
`metrics.jsonl` into `--out`, every `--save_every` steps and at the end.

Why pretrain at all: measured before this project (issue 6), a ~1M-parameter model trained
from scratch for 20 minutes learns the answer format but not lookup; the recipe's SFT + RL
presuppose a base model that can read, so we make one with our own pipeline.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from qwenlong_jax import models
from qwenlong_jax.data import pretrain as pretrain_data
from qwenlong_jax.data import synthetic
from qwenlong_jax.data.prompt import build_prompt
from qwenlong_jax.data.tokenizer import DEFAULT_TOKENIZER, copy_tokenizer, load_tokenizer
from qwenlong_jax.rl.sft_step import pack_masked_rows, sft_update
from qwenlong_jax.run.train_state import TrainState, with_lr

BASE_SHAPE = dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32,
                  intermediate_size=512, rope_theta=10000.0, tie_word_embeddings=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="qwenlong_jax/assets/base")
    p.add_argument("--tokenizer", default="", help="tokenizer path ('' = the embedded one)")
    p.add_argument("--minutes", type=float, default=75.0, help="wall-clock budget")
    p.add_argument("--steps", type=int, default=0, help="step budget (overrides --minutes when > 0)")
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--rows", type=int, default=8, help="packed rows per step")
    p.add_argument("--max_doc_tokens", type=int, default=448)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save_every", type=int, default=200)
    p.add_argument("--questions", type=int, default=4, help="QA lines per document")
    p.add_argument("--restate", type=float, default=0.5, help="share of QA lines restating the fact")
    p.add_argument("--attributes", type=int, default=8, help="fact attributes (1: the name alone is the key)")
    p.add_argument("--chat_fraction", type=float, default=0.25)
    p.add_argument("--qa_reserve", type=int, default=pretrain_data.QA_RESERVE,
                   help="tokens of the document given up per QA line; 0 = QA lines on top (dense)")
    p.add_argument("--copy_fraction", type=float, default=0.0,
                   help="share of examples that are copy drills (a random sequence, then again)")
    p.add_argument("--loss_on", choices=("all", "answers"), default="answers",
                   help="targets: every token, or only QA lines and chat responses (data/pretrain.py)")
    p.add_argument("--init_from", default="", help="continue from an HF checkpoint (fresh optimizer)")
    p.add_argument("--hidden_size", type=int, default=BASE_SHAPE["hidden_size"])
    p.add_argument("--num_layers", type=int, default=BASE_SHAPE["num_layers"])
    p.add_argument("--probe_lengths", default="128,320",
                   help="document lengths of the held-out lookup probe logged at each save")
    return p.parse_args(argv)


def lookup_probe_batch(tok, doc_tokens: int, num: int, attributes: int, seed: int = 12345) -> dict:
    """Teacher-forced lookup probe: `num` chat-formatted lookup examples of about `doc_tokens`
    tokens (held out: their own seed), and for each the positions whose next tokens spell the
    value restated inside <think> -- the tokens that need reading the document."""
    rows, where, want = [], [], []
    for i in range(num):
        rng = random.Random(f"probe:{seed}:{doc_tokens}:{i}")
        doc = synthetic.make_document(rng, doc_tokens, tok.count, attributes=attributes)
        q = synthetic.ask(rng, doc, "lookup")
        prompt, response = tok.chat_prompt(build_prompt(doc.text, q.question)), tok.encode(q.response)
        value = tok.encode(f" {q.answer}")
        k = next(j for j in range(len(response)) if response[j:j + len(value)] == value)
        rows.append(prompt + response)
        where.append([len(prompt) + k - 1 + t for t in range(len(value))])
        want.append(value)
    T, L = max(map(len, rows)), max(map(len, want))
    tokens = np.zeros((num, T), np.int32)
    seg = np.zeros((num, T), np.int32)
    where_BL = np.zeros((num, L), np.int32)
    want_BL = np.full((num, L), -1, np.int32)  # -1: no token (values of different lengths)
    for i, r in enumerate(rows):
        tokens[i, :len(r)] = r
        seg[i, :len(r)] = 1
        where_BL[i, :len(where[i])] = where[i]
        want_BL[i, :len(want[i])] = want[i]
    return {"tokens_BT": tokens, "segment_ids_BT": seg, "where_BL": where_BL, "want_BL": want_BL}


def lookup_accuracy(cfg, params, probe: dict) -> jax.Array:
    """Share of probe examples whose restated value is the model's top prediction at every one
    of its tokens (a scalar)."""
    logits_BTV = models.forward(cfg, params, probe["tokens_BT"], segment_ids_BT=probe["segment_ids_BT"])
    B = probe["where_BL"].shape[0]
    pred_BL = jnp.argmax(logits_BTV[jnp.arange(B)[:, None], probe["where_BL"]], axis=-1)
    ok_BL = (pred_BL == probe["want_BL"]) | (probe["want_BL"] < 0)
    return jnp.mean(jnp.all(ok_BL, axis=1))


def _save(args, cfg, state, tok_path, info, metrics_rows):
    models.save_hf_checkpoint(args.out, cfg, state.params)
    copy_tokenizer(tok_path, os.path.join(args.out, "tokenizer"))
    with open(os.path.join(args.out, "pretrain.json"), "w") as f:
        json.dump(info, f, indent=2)
    with open(os.path.join(args.out, "metrics.jsonl"), "a") as f:
        for row in metrics_rows:
            f.write(json.dumps(row) + "\n")


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tok_path = args.tokenizer or DEFAULT_TOKENIZER
    tok = load_tokenizer(tok_path)
    cfg = models.get_model_config(
        "tiny", vocab_size=tok.vocab_size,
        **{**BASE_SHAPE, "hidden_size": args.hidden_size, "num_layers": args.num_layers},
    )
    tx = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(optax.adamw)(learning_rate=args.lr, b1=0.9, b2=0.95, weight_decay=0.1),
    )
    if args.init_from:
        cfg, params = models.load_hf_checkpoint(args.init_from)
    else:
        params = models.init_params(cfg, jax.random.key(args.seed))
    state = TrainState.create(params, tx)
    step_fn = jax.jit(lambda s, b: sft_update(cfg, tx, s, b), donate_argnums=0)
    probes = {int(n): lookup_probe_batch(tok, int(n), 32, args.attributes)
              for n in args.probe_lengths.split(",") if n}
    probe_fn = jax.jit(lambda p, b: lookup_accuracy(cfg, p, b))
    if os.path.exists(os.path.join(args.out, "metrics.jsonl")):
        os.remove(os.path.join(args.out, "metrics.jsonl"))

    previous = None  # the stage this run continues, recorded for reproducibility
    if args.init_from and os.path.exists(os.path.join(args.init_from, "pretrain.json")):
        with open(os.path.join(args.init_from, "pretrain.json")) as f:
            previous = json.load(f)
    budget_s = args.minutes * 60
    t0 = time.time()
    progress = lambda step: (step / args.steps) if args.steps else (time.time() - t0) / budget_s
    step, index, tokens_seen = 0, 0, 0
    pending, last = [], {}
    bar = tqdm(total=args.steps or int(budget_s), unit="step" if args.steps else "s", desc="pretrain")
    while progress(step) < 1.0:
        examples, n_tok = [], 0
        while n_tok < args.rows * args.seq_len * 0.9:
            ids, mask = pretrain_data.pretrain_example(
                args.seed, index, progress(step), tok, max_tokens=args.max_doc_tokens,
                questions=args.questions, chat_fraction=args.chat_fraction,
                attributes=args.attributes, restate=args.restate, loss_on=args.loss_on,
                qa_reserve=args.qa_reserve, copy_fraction=args.copy_fraction)
            index += 1
            ids, mask = ids[: args.seq_len], [0] + mask[1: args.seq_len]  # the first token has no context
            examples.append((ids, mask))
            n_tok += len(ids)
        batch = pack_masked_rows(examples, args.seq_len)
        batch = {k: v[None, : args.rows] for k, v in batch.items()}  # [U=1, rows, W]
        frac = min(progress(step), 1.0)
        warm = min(1.0, (step + 1) / args.warmup)
        lr = args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))
        state, metrics = step_fn(with_lr(state, lr), batch)
        tokens_seen += int(batch["loss_mask_BW"].sum())
        step += 1
        if step % 20 == 0 or progress(step) >= 1.0:
            last = {k: float(v) for k, v in jax.device_get(metrics).items()}
            row = {"step": step, "minutes": (time.time() - t0) / 60, "tokens": tokens_seen,
                   "progress": frac, **last}
            pending.append(row)
            bar.set_postfix(loss=f"{last['nll']:.3f}", acc=f"{last['token_acc']:.3f}")
        bar.update(1 if args.steps else int(time.time() - t0) - bar.n)
        if step % args.save_every == 0 or progress(step) >= 1.0:
            lookup = {f"lookup_acc_{n}": float(probe_fn(state.params, b)) for n, b in probes.items()}
            pending.append({"step": step, "minutes": (time.time() - t0) / 60, **lookup})
            tqdm.write(f"step {step}: " + " ".join(f"{k}={v:.2f}" for k, v in lookup.items()))
            info = {"command": "python -m qwenlong_jax.pretrain " + " ".join(sys.argv[1:] if argv is None else argv),
                    "steps": step, "tokens": tokens_seen, "minutes": round((time.time() - t0) / 60, 2),
                    "final": last, "lookup": lookup, "model": {k: getattr(cfg, k) for k in ("hidden_size", "num_layers", "num_heads",
                                                                        "num_kv_heads", "head_dim", "intermediate_size",
                                                                        "vocab_size")},
                    "num_params": models.count_params(state.params), "seq_len": args.seq_len,
                    "rows": args.rows, "max_doc_tokens": args.max_doc_tokens, "lr": args.lr, "seed": args.seed,
                    "init_from": args.init_from, "previous": previous}
            _save(args, cfg, state, tok_path, info, pending)
            pending = []
    bar.close()
    return info


if __name__ == "__main__":
    main()
