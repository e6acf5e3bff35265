"""Pretraining's loop: the settings, the time- or step-boxed run, the checkpoint it writes.

Next-token pretraining of a small Qwen2-shaped model from scratch on the synthetic stream of
data/pretrain.py (documents with facts and interleaved QA lines; a quarter of the examples are
full chat-formatted SFT examples), with a length curriculum from 48 to `max_doc_tokens` tokens
that keeps short documents in the mix. Several examples are packed per row (segment ids). The
run is time-boxed (`minutes`) or step-boxed (`steps`); the curriculum follows the fraction of
the budget spent. It writes an HF checkpoint (config.json + model.safetensors), the tokenizer,
`pretrain.json` (the exact command, steps, tokens, minutes, final loss) and `metrics.jsonl` into
`out`, every `save_every` steps and at the end.

Why pretrain at all: a ~1M-parameter model trained from scratch for 20 minutes learns the answer
format but not lookup; the recipe's SFT + RL presuppose a base model that can read, so we make
one with our own pipeline.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
import optax
from tqdm import tqdm

from qwenlong_jax import models
from qwenlong_jax.data import pretrain as pretrain_data
from qwenlong_jax.data.tokenizer import DEFAULT_TOKENIZER, copy_tokenizer, load_tokenizer
from qwenlong_jax.pretraining.probe import lookup_accuracy, lookup_probe_batch
from qwenlong_jax.pretraining.settings import BASE_SHAPE, PretrainSettings
from qwenlong_jax.rl.sft_step import pack_masked_rows, sft_update
from qwenlong_jax.run.train_state import TrainState, with_lr


def _save(args: PretrainSettings, cfg, state, tok_path, info, metrics_rows):
    models.save_hf_checkpoint(args.out, cfg, state.params)
    copy_tokenizer(tok_path, os.path.join(args.out, "tokenizer"))
    with open(os.path.join(args.out, "pretrain.json"), "w") as f:
        json.dump(info, f, indent=2)
    with open(os.path.join(args.out, "metrics.jsonl"), "a") as f:
        for row in metrics_rows:
            f.write(json.dumps(row) + "\n")


def pretrain(args: PretrainSettings, command: str = "") -> dict:
    """Run one stage; the info written to OUT/pretrain.json (`command`: the command line that
    asked for it, recorded there)."""
    tok_path = args.tokenizer or DEFAULT_TOKENIZER
    tok = load_tokenizer(tok_path)
    cfg = models.get_model_config(
        "tiny",
        vocab_size=tok.vocab_size,
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
    probes = {n: lookup_probe_batch(tok, n, 32, args.attributes) for n in args.probe_lengths}
    probe_fn = jax.jit(lambda p, b: lookup_accuracy(cfg, p, b))
    if os.path.exists(os.path.join(args.out, "metrics.jsonl")):
        os.remove(os.path.join(args.out, "metrics.jsonl"))

    previous = None  # the stage this run continues, recorded for reproducibility
    if args.init_from and os.path.exists(os.path.join(args.init_from, "pretrain.json")):
        with open(os.path.join(args.init_from, "pretrain.json")) as f:
            previous = json.load(f)
    budget_s = args.minutes * 60
    t0 = time.time()

    def progress(step: int) -> float:
        return (step / args.steps) if args.steps else (time.time() - t0) / budget_s

    step, index, tokens_seen = 0, 0, 0
    pending, last = [], {}
    bar = tqdm(total=args.steps or int(budget_s), unit="step" if args.steps else "s", desc="pretrain")
    while progress(step) < 1.0:
        examples, n_tok = [], 0
        while n_tok < args.rows * args.seq_len * 0.9:
            ids, mask = pretrain_data.pretrain_example(
                args.seed,
                index,
                progress(step),
                tok,
                max_tokens=args.max_doc_tokens,
                questions=args.questions,
                chat_fraction=args.chat_fraction,
                attributes=args.attributes,
                restate=args.restate,
                loss_on=args.loss_on,
                qa_reserve=args.qa_reserve,
                copy_fraction=args.copy_fraction,
            )
            index += 1
            ids, mask = ids[: args.seq_len], [0] + mask[1 : args.seq_len]  # the first token has no context
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
            row = {"step": step, "minutes": (time.time() - t0) / 60, "tokens": tokens_seen, "progress": frac, **last}
            pending.append(row)
            bar.set_postfix(loss=f"{last['nll']:.3f}", acc=f"{last['token_acc']:.3f}")
        bar.update(1 if args.steps else int(time.time() - t0) - bar.n)
        if step % args.save_every == 0 or progress(step) >= 1.0:
            lookup = {f"lookup_acc_{n}": float(probe_fn(state.params, b)) for n, b in probes.items()}
            pending.append({"step": step, "minutes": (time.time() - t0) / 60, **lookup})
            tqdm.write(f"step {step}: " + " ".join(f"{k}={v:.2f}" for k, v in lookup.items()))
            info = {
                "command": command,
                "steps": step,
                "tokens": tokens_seen,
                "minutes": round((time.time() - t0) / 60, 2),
                "final": last,
                "lookup": lookup,
                "model": {
                    k: getattr(cfg, k)
                    for k in (
                        "hidden_size",
                        "num_layers",
                        "num_heads",
                        "num_kv_heads",
                        "head_dim",
                        "intermediate_size",
                        "vocab_size",
                    )
                },
                "num_params": models.count_params(state.params),
                "seq_len": args.seq_len,
                "rows": args.rows,
                "max_doc_tokens": args.max_doc_tokens,
                "lr": args.lr,
                "seed": args.seed,
                "init_from": args.init_from,
                "previous": previous,
            }
            _save(args, cfg, state, tok_path, info, pending)
            pending = []
    bar.close()
    return info
