"""Training-step benchmark: loss + gradient of ONE GRPO group, three ways, same weights, same run.

    python -m qwenlong_jax.bench train                  # 4096-token prompt, G=8, 256-token responses
    python -m qwenlong_jax.bench train --prompt_len 512 --resp_len 32 --iters 1   # quick check

A tiny random Qwen2 (d_model 256, 4 layers, 4 heads / 2 KV heads of 64, MLP 1024, vocab 8192,
tied embeddings) is built by transformers and saved; ours loads it with models.load_hf_checkpoint.

  packed  ours: rl.packing.pack_groups -> ONE row [prompt | resp_1 | ... | resp_G] with
          shared_prefix_segment=1, rl.grpo_step.grpo_loss under jax.value_and_grad, jitted.
  naive   ours: packing.unpacked_rows -> G rows [prompt | resp_g], shared_prefix_segment=None.
  torch   transformers Qwen2ForCausalLM on the same G rows (its default attention, sdpa on CPU):
          forward, log_softmax of the response logits, token logprobs, entropy, the same clipped
          token-mean loss minus 0.001 x entropy, backward (what a verl / TRL actor update runs).

Our attention is `--attention xla` by default: the flash kernel runs in Pallas interpret mode on
CPU, which is far too slow to time. `xla` computes the dense masked [T, S] scores, so the packed
row pays for its masked blocks here (the flash kernel skips them on GPU/TPU).

Each variant runs in its own subprocess (clean memory accounting). Time: median of --iters runs
after --warmup runs (ours: compile timed separately). Memory: peak RSS over the timed runs minus
the RSS just before them (Linux VmHWM after resetting it via /proc/self/clear_refs), for all three;
for ours also XLA's compiled memory analysis (arguments + outputs + temporaries - aliased).
Model FLOPs (printed with the table): 6 x P_mm x tokens + 12 x L x N x H x visible (q, k) pairs,
where P_mm are the matmul weights (layers + LM head) and tokens/pairs those of each layout (the
naive layout really does G times the prompt's work). Dense masked scores, our LM-head
recomputation and elementwise work are not counted. Peak: the best of a few f32 matmuls in jax.
A variant whose compiled peak exceeds 70% of MemAvailable is not run (reported as such).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Sequence

import numpy as np

VARIANTS = ("packed", "naive", "torch")
ENTROPY_COEFF, CLIP_LOW, CLIP_HIGH = 0.001, 0.2, 0.28


# ----------------------------------------------------------------------------- shared inputs
def make_group(args):
    """Prompt, G responses, advantages and old logprobs (near log(1/V), so ratios are ~1)."""
    rng = np.random.default_rng(0)
    prompt = rng.integers(1, args.vocab, size=args.prompt_len).tolist()
    responses = [rng.integers(1, args.vocab, size=args.resp_len).tolist() for _ in range(args.group)]
    adv_N = rng.normal(size=args.group).astype(np.float32)
    old_NR = (-math.log(args.vocab) + 0.01 * rng.normal(size=(args.group, args.resp_len)))
    return prompt, responses, adv_N, old_NR.astype(np.float32)


def model_flops(args, variant: str) -> float:
    D, L, V, F = args.d_model, args.layers, args.vocab, 4 * args.d_model
    N, K, H = args.heads, args.kv_heads, args.d_model // args.heads
    p_mm = L * (2 * D * N * H + 2 * D * K * H + 3 * D * F) + D * V
    P, R, G = args.prompt_len, args.resp_len, args.group
    if variant == "packed":
        tokens, pairs = P + G * R, P * (P + 1) // 2 + G * (R * P + R * (R + 1) // 2)
    else:
        tokens, pairs = G * (P + R), G * (P + R) * (P + R + 1) // 2
    return 6 * p_mm * tokens + 12 * L * N * H * pairs


# ----------------------------------------------------------------------------- memory probes
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak_rss() -> int:
    """Reset VmHWM to the current RSS; returns the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def _timed_runs(step, args) -> dict:
    """Peak RSS delta of the first full-size run (from a state where none has run yet, so the
    allocator holds nothing it could reuse), then the median time of `iters` runs after it."""
    base = _reset_peak_rss()
    first = step()
    rss_delta = _status_kib("VmHWM") * 1024 - base
    for _ in range(args.warmup - 1):
        step()
    times = []
    for _ in range(args.iters):
        t = time.perf_counter()
        first = step()
        times.append(time.perf_counter() - t)
    return dict(times=times, rss_peak_delta=rss_delta, result=first)


# ----------------------------------------------------------------------------- workers
def run_ours(args, variant: str, model_dir: str) -> dict:
    import jax
    import optax

    from qwenlong_jax import models
    from qwenlong_jax.rl import grpo_step, packing

    cfg, params = models.load_hf_checkpoint(model_dir)
    cfg = cfg.replace(attention_impl=args.attention, remat=args.remat)
    prompt, responses, adv_N, old_NR = make_group(args)
    R = args.resp_len
    if variant == "packed":
        W = packing.round_up(packing.packed_row_length([prompt], responses, args.group), 128)
        rows = packing.pack_groups([prompt], responses, args.group, W, R)
    else:
        rows = packing.unpacked_rows([prompt], responses, args.group, args.prompt_len + R, R)
    mb = jax.tree.map(lambda x: x[0, 0], grpo_step.grpo_batch(rows, adv_N, 1, 1, old_NR))
    ls = grpo_step.LossSettings(clip_low=CLIP_LOW, clip_high=CLIP_HIGH, agg="token-mean",
                                entropy_coeff=ENTROPY_COEFF,
                                shared_prefix_segment=rows.shared_prefix_segment)

    def loss_and_grad(p, mb):
        loss, grads = jax.value_and_grad(lambda p: grpo_loss_only(p, mb))(p)
        return loss, optax.global_norm(grads), grads

    def grpo_loss_only(p, mb):
        return grpo_step.grpo_loss(cfg, ls, p, mb)[0]

    t = time.perf_counter()
    compiled = jax.jit(loss_and_grad).lower(params, mb).compile()
    compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    xla_peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
                + mem.temp_size_in_bytes)
    out = dict(variant=variant, rows=list(rows.tokens_BW.shape), compile_s=compile_s,
               xla_peak=xla_peak, xla_temp=mem.temp_size_in_bytes)
    avail = _meminfo_kib("MemAvailable") * 1024
    if xla_peak > 0.7 * avail:
        return dict(out, skipped=f"compiled peak {xla_peak / 2**30:.1f} GiB > 70% of the "
                                 f"{avail / 2**30:.1f} GiB available")
    step = lambda: jax.block_until_ready(compiled(params, mb)[:2])
    r = _timed_runs(step, args)
    loss, gnorm = (float(x) for x in r.pop("result"))
    return dict(out, **r, loss=loss, grad_norm=gnorm)


def run_torch(args, model_dir: str) -> dict:
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    model = transformers.Qwen2ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    prompt, responses, adv_N, old_NR = make_group(args)
    P, R = args.prompt_len, args.resp_len
    ids = torch.tensor([prompt + r for r in responses])
    resp = ids[:, P:]
    adv, old = torch.from_numpy(adv_N)[:, None], torch.from_numpy(old_NR)

    def step(ids=ids, P=P, resp=resp, old=old, adv=adv):
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
        logp_all = torch.log_softmax(logits[:, P - 1:-1].float(), dim=-1)  # temperature 1
        logp = torch.gather(logp_all, -1, resp[..., None])[..., 0]
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        ratio = torch.exp(torch.clamp(logp - old, -20, 20))
        pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - CLIP_LOW, 1 + CLIP_HIGH))
        loss = pg.mean() - ENTROPY_COEFF * entropy.mean()
        loss.backward()
        gnorm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
        return float(loss), float(gnorm)

    # Warm-up on a short batch (lazy init, kernels) so the timed runs need not repeat full ones.
    short = ids[:2, : min(64, P) + 8]
    step(short, min(64, P), short[:, min(64, P):], old[:2, :8], adv[:2])
    r = _timed_runs(step, args)
    loss, gnorm = r.pop("result")
    return dict(variant="torch", rows=list(ids.shape), attn=model.config._attn_implementation,
                **r, loss=loss, grad_norm=gnorm)


def run_matmul(args) -> dict:
    import jax
    import jax.numpy as jnp

    n = args.matmul_n
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return dict(variant="matmul", flops_per_s=2 * n**3 / min(times), n=n)


def _meminfo_kib(field: str) -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def worker(args) -> None:
    if args.worker == "matmul":
        res = run_matmul(args)
    elif args.worker == "torch":
        res = run_torch(args, args.model_dir)
    else:
        res = run_ours(args, args.worker, args.model_dir)
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


def _gib(x) -> str:
    return f"{x / 2**30:.2f}"


def report(args, argv, res: dict, peak: float) -> None:
    print(f"\nGRPO loss+grad of one group: prompt {args.prompt_len}, G={args.group}, responses "
          f"{args.resp_len}; Qwen2 d={args.d_model} L={args.layers} N={args.heads} K={args.kv_heads} "
          f"V={args.vocab} f32; ours: jax CPU, attention={args.attention}, remat={args.remat}; "
          f"torch {args.threads} threads, attention={res['torch'].get('attn', '?')}. "
          f"Matmul peak (f32 {args.matmul_n}^3 in jax): {peak / 1e9:.1f} GFLOP/s.\n")
    print("| variant | rows x tokens | time s (median) | peak RSS delta GiB | XLA compiled peak GiB "
          "| model GFLOP | achieved GFLOP/s | of matmul peak | loss | grad norm |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in VARIANTS:
        r = res[name]
        fl = model_flops(args, name)
        xla = _gib(r["xla_peak"]) if "xla_peak" in r else "-"
        rows = "x".join(map(str, r["rows"])) if "rows" in r else "-"
        if "skipped" in r:
            print(f"| {name} | {rows} | not run: {r['skipped']} | | {xla} | {fl / 1e9:.0f} | | | | |")
            continue
        t = statistics.median(r["times"])
        print(f"| {name} | {rows} | {t:.2f} | {_gib(r['rss_peak_delta'])} | {xla} | {fl / 1e9:.0f} "
              f"| {fl / t / 1e9:.1f} | {fl / t / peak:.0%} | {r['loss']:.6f} | {r['grad_norm']:.6f} |")
    p = res["packed"]
    if "skipped" not in p:
        tp = statistics.median(p["times"])
        for name, time_target, mem_target in (("naive", 5, 4), ("torch", 3, None)):
            r = res[name]
            if "skipped" in r:
                print(f"\npacked vs {name}: not measured ({name} not run)")
                continue
            speed = statistics.median(r["times"]) / tp
            mem = r["rss_peak_delta"] / max(p["rss_peak_delta"], 1)
            line = (f"\npacked vs {name}: {speed:.1f}x faster (target >= {time_target}x: "
                    f"{'met' if speed >= time_target else 'MISSED'}), {mem:.1f}x less peak RSS delta")
            if mem_target:
                xmem = r["xla_peak"] / p["xla_peak"]
                line += (f", {xmem:.1f}x less XLA compiled peak (target >= {mem_target}x: "
                         f"RSS {'met' if mem >= mem_target else 'MISSED'}, compiled "
                         f"{'met' if xmem >= mem_target else 'MISSED'})")
            print(line)
        frac = model_flops(args, "packed") / tp / peak
        print(f"\npacked step: {frac:.0%} of the measured matmul peak (target >= 40%: "
              f"{'met' if frac >= 0.4 else 'MISSED'}); compile {p['compile_s']:.0f} s (not timed).")
    print("\nmodel FLOPs = 6 x P_mm x tokens + 12 x L x N x H x visible (q,k) pairs "
          "(P_mm = matmul weights incl. LM head)")
    print(f"command: python -m qwenlong_jax.bench train {' '.join(argv)}".rstrip())


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
    ap.add_argument("--attention", default="xla", choices=["xla", "flash"])
    ap.add_argument("--remat", default="none", choices=["none", "full", "dots", "dots_no_batch"])
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs (>= 1; memory is read on the first)")
    ap.add_argument("--iters", type=int, default=3)
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
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        build_checkpoint(args, model_dir)
        peaks = [spawn(argv, "matmul", model_dir)]
        res = {v: (spawn(argv, v, model_dir) if v in wanted else dict(skipped="not requested"))
               for v in VARIANTS}
        peaks.append(spawn(argv, "matmul", model_dir))
    peak = max(p.get("flops_per_s", 0.0) for p in peaks)
    report(args, argv, res, peak)


if __name__ == "__main__":
    main(sys.argv[1:])
