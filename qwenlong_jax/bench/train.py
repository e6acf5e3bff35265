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

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from qwenlong_jax.bench.train_workers import run_matmul, run_ours, run_torch

VARIANTS = ("packed", "naive", "torch")


def _p_mm(args) -> int:
    """Matmul weights: per layer q, k, v, o and the SwiGLU MLP, plus the (tied) LM head."""
    D, L, V, F = args.d_model, args.layers, args.vocab, 4 * args.d_model
    N, K, H = args.heads, args.kv_heads, args.d_model // args.heads
    return L * (2 * D * N * H + 2 * D * K * H + 3 * D * F) + D * V


def model_flops(args, layout: str) -> float:
    """Forward + backward FLOPs of the layout's useful work (see the module docstring)."""
    N, L, H = args.heads, args.layers, args.d_model // args.heads
    P, R, G = args.prompt_len, args.resp_len, args.group
    if layout == "packed":
        tokens, pairs = P + G * R, P * (P + 1) // 2 + G * (R * P + R * (R + 1) // 2)
    else:
        tokens, pairs = G * (P + R), G * (P + R) * (P + R + 1) // 2
    return 6 * _p_mm(args) * tokens + 12 * L * N * H * pairs


def worker(args) -> None:
    if args.worker == "matmul":
        res = run_matmul(args)
    elif args.worker == "torch":
        res = run_torch(args, args.model_dir)
    else:
        variant, attention = args.worker.split("/")  # "packed/blockwise"
        res = run_ours(args, variant, attention, args.model_dir)
    print("RESULT " + json.dumps(res))


# ----------------------------------------------------------------------------- driver
def build_checkpoint(args, path: str) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    hf_cfg = transformers.Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.d_model,
        intermediate_size=4 * args.d_model,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=2 * (args.prompt_len + args.resp_len),
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1e4},
    )
    transformers.Qwen2ForCausalLM(hf_cfg).float().save_pretrained(path, safe_serialization=True)


def spawn(argv: Sequence[str], name: str, model_dir: str) -> dict:
    cmd = [sys.executable, "-m", "qwenlong_jax.bench", "train", *argv, "--worker", name, "--model_dir", model_dir]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(f"[{name}] {time.perf_counter() - t:.0f} s", file=sys.stderr)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:  # e.g. killed for memory
        return dict(variant=name, skipped=f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return json.loads(line[len("RESULT ") :])


def _gib(x) -> str:
    return f"{x / 2**30:.2f}"


def _met(x: float, target: float) -> str:
    return f"target >= {target}x: {'met' if x >= target else 'MISSED'}"


def round_ratio(runs: Sequence[dict], num: str, den: str) -> list[float] | None:
    """Per-round ratio of median times num / den (None when either was not run in a round)."""
    out = []
    for r in runs:
        if "times" not in r.get(num, {}) or "times" not in r.get(den, {}):
            return None
        out.append(statistics.median(r[num]["times"]) / statistics.median(r[den]["times"]))
    return out


def merge_rounds(runs: Sequence[dict]) -> dict:
    """One result per variant: the first round's (memory, loss), with every round's times."""
    res = {}
    for k, first in runs[0].items():
        res[k] = dict(first)
        if "times" in first:
            res[k]["times"] = [t for r in runs for t in r[k].get("times", [])]
    return res


def _ratio_text(ratios: list[float] | None, fallback: float) -> tuple[float, str]:
    if not ratios or len(ratios) < 2:
        return fallback, ""
    return statistics.median(ratios), f", rounds {min(ratios):.1f}-{max(ratios):.1f}x"


def report(args, argv, res: dict, peak: float, runs: Sequence[dict] = ()) -> None:
    torch_attn = res.get("torch", {}).get("attn", "?")
    print(
        f"\nGRPO loss+grad of one group: prompt {args.prompt_len}, G={args.group}, responses "
        f"{args.resp_len}; Qwen2 d={args.d_model} L={args.layers} N={args.heads} K={args.kv_heads} "
        f"V={args.vocab} f32, remat={args.remat}; ours: jax {_platform()} (blockwise = "
        f"compiled lax blocks, flash = Pallas interpret mode); torch {args.threads} threads, "
        f"attn_implementation={torch_attn}. "
        f"Matmul peak (best f32 {args.matmul_n}^3 matmul in jax, this run): "
        f"{peak / 1e9:.1f} GFLOP/s. Time: median of {args.iters} x {args.rounds} round(s) "
        f"(s each in brackets).\n"
    )
    print(
        "| variant | rows x tokens | time s | peak RSS delta GiB | XLA compiled peak GiB "
        "| model GFLOP | GFLOP/s | of matmul peak | loss | grad norm |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    med = {}
    for key, r in res.items():
        fl = model_flops(args, key.split("/")[0])
        xla = _gib(r["xla_peak"]) if "xla_peak" in r else "-"
        rows = "x".join(map(str, r["rows"])) if "rows" in r else "-"
        if "skipped" in r:
            print(f"| {key} | {rows} | not run: {r['skipped']} | | {xla} | {fl / 1e9:.0f} | | | | |")
            continue
        t = med[key] = statistics.median(r["times"])
        each = ", ".join(f"{x:.1f}" for x in r["times"])
        print(
            f"| {key} | {rows} | {t:.1f} ({each}) | {_gib(r['rss_peak_delta'])} | {xla} "
            f"| {fl / 1e9:.0f} | {fl / t / 1e9:.1f} | {fl / t / peak:.0%} | {r['loss']:.6f} "
            f"| {r['grad_norm']:.6f} |"
        )
    print()
    for attn in args.attention.split(","):
        p, n = res.get(f"packed/{attn}", {}), res.get(f"naive/{attn}", {})
        if "xla_peak" in p and "xla_peak" in n:
            xmem = n["xla_peak"] / p["xla_peak"]
            line = f"- {attn}: packed vs naive, XLA compiled peak {xmem:.1f}x less ({_met(xmem, 4)})"
            if f"packed/{attn}" in med and f"naive/{attn}" in med:
                speed, rng = _ratio_text(
                    round_ratio(runs, f"naive/{attn}", f"packed/{attn}"), med[f"naive/{attn}"] / med[f"packed/{attn}"]
                )
                rss = n["rss_peak_delta"] / p["rss_peak_delta"]
                line += (
                    f"; peak RSS delta {rss:.1f}x less ({_met(rss, 4)}); "
                    f"time ratio naive/packed {speed:.1f}x{rng} ({_met(speed, 5)})"
                )
            else:
                line += "; time not measured (a variant was not run)"
            print(line)
        if f"packed/{attn}" in med and "torch" in med:
            speed, rng = _ratio_text(round_ratio(runs, "torch", f"packed/{attn}"), med["torch"] / med[f"packed/{attn}"])
            rss = res["torch"]["rss_peak_delta"] / p["rss_peak_delta"]
            print(
                f"- {attn}: packed vs torch naive, time ratio torch/packed {speed:.1f}x{rng} "
                f"({_met(speed, 3)}); peak RSS delta ratio torch/packed {rss:.1f}x"
            )
        if f"packed/{attn}" in med:
            frac = model_flops(args, "packed") / med[f"packed/{attn}"] / peak
            print(
                f"- {attn}: packed step at {frac:.0%} of the matmul peak (target >= 40%: "
                f"{'met' if frac >= 0.4 else 'MISSED'}); compile {p['compile_s']:.0f} s, not timed"
            )
    print(
        "\nmodel FLOPs = 6 x P_mm x tokens + 12 x L x N x H x visible (q,k) pairs "
        f"(P_mm = {_p_mm(args):,} matmul weights incl. the tied LM head)"
    )
    print(f"command: python -m qwenlong_jax.bench train {' '.join(argv)}".rstrip())


def _platform() -> str:
    import jax

    return jax.devices()[0].platform


def run(args, argv: Sequence[str]) -> None:
    """The benchmark for the flag values `args` (qwenlong_jax/cli/bench.py); `argv` is printed
    as the command and passed on to the worker processes."""
    argv = list(argv)
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
