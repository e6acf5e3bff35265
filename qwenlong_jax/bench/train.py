"""Training-step benchmark: loss + gradient of ONE GRPO group, three ways, same weights, same run.

    python -m qwenlong_jax.bench train                  # 4096-token prompt, G=8, 256-token responses
    python -m qwenlong_jax.bench train --prompt_len 512 --resp_len 32 --iters 1   # quick check

A tiny random Qwen2 (d_model 256, 4 layers, 4 heads / 2 KV heads of 64, MLP 1024, vocab 8192,
tied embeddings) is built by transformers and saved; ours loads it with models.load_hf_checkpoint.

  packed  ours: rl.packing.pack_groups -> ONE row [prompt | resp_1 | ... | resp_G] with
          shared_prefix_segment=1, rl.grpo_step.grpo_loss under jax.value_and_grad, jitted.
  naive   ours: packing.unpacked_rows -> G rows [prompt | resp_g], shared_prefix_segment=None.
  torch   transformers Qwen2ForCausalLM on the same G rows: forward, log_softmax of the
          response logits, token logprobs, entropy, the same clipped token-mean loss minus
          0.001 x entropy, backward (what a verl / TRL actor update runs).

The torch baseline runs in its fastest ordinary configuration: attn_implementation="sdpa" set
explicitly (torch's fused CPU attention; flash-attention kernels do not exist on CPU), no
attention_mask (the G rows are all the same length, nothing is padded, so a user passes
input_ids alone and sdpa takes its causal fast path), float32 like ours, and torch threads =
the cores this process may run on (`--threads`, default os.sched_getaffinity). No
torch.compile: not what a training loop gets by default.

Our attention: `--attention blockwise,flash,xla` (default: all three). `blockwise`
(kernels/blockwise.py) is the CPU path: plain lax over the visible (q block, kv block) pairs only,
compiled by XLA as ordinary matmuls, O(T) memory. `flash` is the Pallas kernel in interpret mode
on CPU (the same blocks, but emulated program by program: for testing the kernel, not speed).
`xla` computes dense masked [T, S] scores, so the packed row pays for its masked blocks; its
naive layout needs far more memory than this CPU has (compiled for the memory analysis, not run).

Each variant runs in its own subprocess (clean memory accounting). Memory: peak RSS during the
first full-size run minus the RSS just before it (Linux VmHWM, reset via /proc/self/clear_refs),
for all three (torch allocations are invisible to tracemalloc); for ours also XLA's compiled
memory analysis (arguments + outputs + temporaries - aliased), which the RSS delta tracks closely.
Time: median of --iters runs after --warmup untimed runs (ours: compile timed separately).
`--rounds R` runs the whole sequence of variant subprocesses R times in turn (A B C A B C ...);
the speed ratios (torch / packed, naive / packed) are then taken round by round and their
median reported with their range, so both sides of a ratio see the same machine load (on a
shared CPU the ratios are the figures to trust; the seconds move with the load). Memory comes
from the first round.
Model FLOPs (printed with the table): 6 x P_mm x tokens + 12 x L x N x H x visible (q, k) pairs,
where P_mm are the matmul weights (layers + LM head) and tokens/pairs those of each layout (the
naive layout really does G times the prompt's work). Dense masked scores, our LM-head
recomputation and elementwise work are not counted. Peak: the best of a few f32 matmuls in jax.
A variant whose compiled peak exceeds 70% of MemAvailable is not run (reported as such).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from qwenlong_jax.bench.train_report import merge_rounds, report
from qwenlong_jax.bench.train_workers import run_matmul, run_ours, run_torch

VARIANTS = ("packed", "naive", "torch")


def worker(args) -> None:
    if args.worker == "matmul":
        res = run_matmul(args)
    elif args.worker == "torch":
        res = run_torch(args, args.model_dir)
    else:
        res = run_ours(args, *args.worker.split("/"), args.model_dir)
    print("RESULT " + json.dumps(res))


# ----------------------------------------------------------------------------- driver
def build_checkpoint(args, path: str) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    hf_cfg = transformers.Qwen2Config(
        vocab_size=args.vocab, hidden_size=args.d_model, intermediate_size=4 * args.d_model,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, max_position_embeddings=2 * (args.prompt_len + args.resp_len),
        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 1e4})
    transformers.Qwen2ForCausalLM(hf_cfg).float().save_pretrained(path, safe_serialization=True)


def spawn(argv: Sequence[str], name: str, model_dir: str) -> dict:
    cmd = [sys.executable, "-m", "qwenlong_jax.bench.train", *argv, "--worker", name,
           "--model_dir", model_dir]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(f"[{name}] {time.perf_counter() - t:.0f} s", file=sys.stderr)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:  # e.g. killed for memory
        return dict(variant=name, skipped=f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return json.loads(line[len("RESULT "):])


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m qwenlong_jax.bench train")
    ap.add_argument("--prompt_len", type=int, default=4096)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--resp_len", type=int, default=256)
    ap.add_argument("--d_model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv_heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--attention", default="blockwise,flash,xla",
                    help="our attention impls, comma-separated (blockwise, flash, xla)")
    ap.add_argument("--remat", default="none", choices=["none", "full", "dots", "dots_no_batch"])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="torch threads (default: the cores this process may use)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of all variants")
    ap.add_argument("--warmup", type=int, default=0, help="untimed full-size runs")
    ap.add_argument("--iters", type=int, default=2, help="timed runs (median reported)")
    ap.add_argument("--matmul_n", type=int, default=4096)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model_dir", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Sequence[str]) -> None:
    argv = list(argv)
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    wanted = args.variants.split(",")
    keys = [f"{v}/{a}" for a in args.attention.split(",") for v in ("packed", "naive") if v in wanted]
    keys += ["torch"] if "torch" in wanted else []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        build_checkpoint(args, model_dir)
        peaks = [spawn(argv, "matmul", model_dir)]
        runs = [{k: spawn(argv, k, model_dir) for k in keys} for _ in range(args.rounds)]
        peaks.append(spawn(argv, "matmul", model_dir))
    report(args, argv, merge_rounds(runs), max(p.get("flops_per_s", 0.0) for p in peaks), runs)


if __name__ == "__main__":
    main(sys.argv[1:])
