"""Attention kernel speed on the device this process runs on (a GPU or TPU; on CPU the Pallas
kernels run in interpret mode and the figures mean nothing beyond the plumbing).

    python -m qwenlong_jax.bench kernels [--lengths 4096,16384,32768 --heads 40 --kv_heads 8
        --head_dim 128 --decode_samples 16 --decode_lengths 32768,65536 --iters 10]

Two tables, each against the fastest ordinary alternative a JAX user has, timed in the same run:

* training/prefill: causal forward+backward (out and dq/dk/dv of one vjp), bf16, ours
  (`kernels.flash_attention`: Pallas, Triton on GPU, Mosaic on TPU) against
  `jax.nn.dot_product_attention(implementation="cudnn")` (cuDNN's fused flash attention; GPU
  only) and the same function with implementation="xla" (materialised scores; skipped where its
  T x T scores would not fit). TFLOP/s count the causal half of the matmuls, forward 2 and
  backward 5 (the recomputed scores included), i.e. 3.5 x 2 x B N T^2 H.
* decode: one new token for each of G samples over a shared S-token prompt cache plus a
  4096-token response cache each, ours (`kernels.decode_attention`, the prompt cache read once
  for all G samples) against `kernels.reference_decode_attention` (the same shared cache in plain
  XLA einsums). GB/s counts the cache bytes read once (prompt K/V + every sample's response K/V).

`--tune T`: instead, sweep the flash kernels' block sizes (block_q, block_k) and Triton launch
parameters (num_warps, num_stages) at T tokens, timing the forward alone and forward+backward,
each checked against cuDNN's output; a configuration that does not compile is listed as such.

Each figure is the median of --iters timed calls after two warm-up calls (compile excluded),
each call ended by `block_until_ready`. Outputs are compared with the baseline's (max abs
difference, printed) so that a fast wrong kernel cannot pass unnoticed.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

import kernels
from kernels import backend

RESPONSE_CACHE = 4096  # decode: per-sample response cache length (the 32B recipe's 10K responses, bucketed)


def _timed(fn: Callable, args: tuple, iters: int) -> tuple[float, object]:
    """Median seconds of `iters` calls after two warm-ups, and the last output."""
    out = None
    for _ in range(2):
        out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _fwd_bwd(attn: Callable) -> Callable:
    def f(q, k, v, ct):
        out, vjp = jax.vjp(attn, q, k, v)
        return (out, *vjp(ct))

    return jax.jit(f)


def _cudnn(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")


def _attention_inputs(B: int, T: int, N: int, K: int, H: int):
    """bf16 q, k, v and the output cotangent of one causal attention, and its FLOPs (the
    causal half of 2 forward and 5 backward matmul passes)."""
    ks = jax.random.split(jax.random.key(T), 4)
    q = jax.random.normal(ks[0], (B, T, N, H), jnp.bfloat16)
    k, v = (jax.random.normal(x, (B, T, K, H), jnp.bfloat16) for x in ks[1:3])
    ct = jax.random.normal(ks[3], (B, T, N, H), jnp.bfloat16)
    return (q, k, v, ct), 3.5 * 2 * B * N * T * T * H


def _max_diff(a, b) -> float:
    return float(max(jnp.max(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32))) for x, y in zip(a, b)))


def _fits_dense(B: int, T: int, N: int, device_bytes: int | None) -> bool:
    """The xla path keeps f32 scores and probabilities [B, N, T, T] (x3 with the backward)."""
    return device_bytes is None or 0.6 * device_bytes > 3 * 4 * B * N * T * T


def flash_rows(args) -> list[dict]:
    B, N, K, H = args.batch, args.heads, args.kv_heads, args.head_dim
    on_gpu = jax.default_backend() == "gpu"
    stats = jax.devices()[0].memory_stats() or {}
    device_bytes = stats.get("bytes_limit")
    impls: dict[str, Callable] = {"ours": lambda q, k, v: kernels.flash_attention(q, k, v, causal=True)}
    if on_gpu:
        impls["cudnn"] = _cudnn
    impls["xla"] = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    rows = []
    for T in args.lengths:
        qkv_ct, flops = _attention_inputs(B, T, N, K, H)
        row: dict = {"T": T, "flops": flops}
        outs = {}
        for name, attn in impls.items():
            if name == "xla" and not _fits_dense(B, T, N, device_bytes):
                row[name] = None
                continue
            s, outs[name] = _timed(_fwd_bwd(attn), qkv_ct, args.iters)
            row[name] = s
            print(f"flash T={T} {name}: {s * 1e3:.2f} ms ({flops / s / 1e12:.0f} TFLOP/s)", file=sys.stderr)
        base = "cudnn" if "cudnn" in outs else "xla"
        if base in outs:
            row["diff"] = _max_diff(outs["ours"], outs[base])
            row["base"] = base
        rows.append(row)
    return rows


def decode_rows(args) -> list[dict]:
    B, G, N, K, H, R = 1, args.decode_samples, args.heads, args.kv_heads, args.head_dim, RESPONSE_CACHE
    rows = []
    for S in args.decode_lengths:
        ks = jax.random.split(jax.random.key(S), 5)
        q = jax.random.normal(ks[0], (B, G, 1, N, H), jnp.bfloat16)
        pk, pv = (jax.random.normal(x, (B, S, K, H), jnp.bfloat16) for x in ks[1:3])
        rk, rv = (jax.random.normal(x, (B, G, R, K, H), jnp.bfloat16) for x in ks[3:5])
        a = (q, pk, pv, jnp.full((B,), S - 7, jnp.int32), rk, rv, jnp.full((B, G), R // 2, jnp.int32))
        cache_bytes = 2 * (pk.nbytes + rk.nbytes)
        row: dict = {"S": S, "bytes": cache_bytes}
        outs = {}
        for name, fn in {"ours": kernels.decode_attention, "xla": kernels.reference_decode_attention}.items():
            s, outs[name] = _timed(jax.jit(fn), a, args.iters)
            row[name] = s
            print(f"decode S={S} {name}: {s * 1e6:.0f} us ({cache_bytes / s / 1e9:.0f} GB/s)", file=sys.stderr)
        row["diff"] = _max_diff([outs["ours"]], [outs["xla"]])
        rows.append(row)
    return rows


def _ms(s: float | None) -> str:
    return "n/a" if s is None else f"{s * 1e3:.2f}"


def report(args, argv: Sequence[str], flash: list[dict], decode: list[dict]) -> None:
    dev = jax.devices()[0]
    print(f"\npython -m qwenlong_jax.bench kernels {' '.join(argv)}".rstrip())
    print(f"device: {dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}; median of {args.iters} calls\n")
    print(
        f"Causal attention forward+backward, B={args.batch} N={args.heads} K={args.kv_heads} H={args.head_dim} bf16:\n"
    )
    print("| tokens | ours ms | cudnn ms | xla ms | ours TFLOP/s | baseline TFLOP/s | baseline / ours | max abs diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in flash:
        base = r.get("base")
        b_s = r.get(base) if base else None
        b_tflops = "n/a" if b_s is None else f"{r['flops'] / b_s / 1e12:.0f} ({base})"
        ratio = "n/a" if b_s is None else f"{b_s / r['ours']:.2f}x"
        print(
            f"| {r['T']} | {_ms(r['ours'])} | {_ms(r.get('cudnn'))} | {_ms(r.get('xla'))} | "
            f"{r['flops'] / r['ours'] / 1e12:.0f} | {b_tflops} | {ratio} | {r.get('diff', float('nan')):.3g} |"
        )
    print(
        f"\nDecode, one token for G={args.decode_samples} samples over a shared prompt cache and "
        f"{RESPONSE_CACHE}-token response caches, N={args.heads} K={args.kv_heads} H={args.head_dim} bf16:\n"
    )
    print("| prompt tokens | cache MiB | ours us | xla us | ours GB/s | xla GB/s | xla / ours | max abs diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in decode:
        print(
            f"| {r['S']} | {r['bytes'] / 2**20:,.0f} | {r['ours'] * 1e6:.0f} | {r['xla'] * 1e6:.0f} | "
            f"{r['bytes'] / r['ours'] / 1e9:.0f} | {r['bytes'] / r['xla'] / 1e9:.0f} | "
            f"{r['xla'] / r['ours']:.2f}x | {r['diff']:.3g} |"
        )


TUNE_BLOCKS = ((64, 64), (128, 64), (64, 128), (128, 128))
TUNE_TRITON = ((4, 2), (4, 3), (8, 2), (8, 3))


def tune(args, argv: Sequence[str]) -> list[dict]:
    B, T, N, K, H = args.batch, args.tune, args.heads, args.kv_heads, args.head_dim
    qkv_ct, flops = _attention_inputs(B, T, N, K, H)
    ref = None
    if jax.default_backend() == "gpu":
        base_s, ref = _timed(_fwd_bwd(_cudnn), qkv_ct, args.iters)
        print(f"cudnn: fwd+bwd {base_s * 1e3:.2f} ms", file=sys.stderr)
    rows = []
    for (bq, bk), (warps, stages) in itertools.product(TUNE_BLOCKS, TUNE_TRITON):
        row: dict = {"block_q": bq, "block_k": bk, "num_warps": warps, "num_stages": stages}
        try:
            with backend.use_triton(warps, stages):

                def attn(q, k, v, bq=bq, bk=bk):
                    return kernels.flash_attention(q, k, v, causal=True, block_q=bq, block_k=bk)

                row["fwd"], _ = _timed(jax.jit(attn), qkv_ct[:3], args.iters)
                row["fwd_bwd"], out = _timed(_fwd_bwd(attn), qkv_ct, args.iters)
            row["diff"] = _max_diff(out, ref) if ref is not None else float("nan")
        except Exception as e:  # a configuration Triton cannot build (shared memory, registers)
            row["error"] = str(e).splitlines()[0][:100]
        print(row, file=sys.stderr)
        rows.append(row)
    print(f"\npython -m qwenlong_jax.bench kernels {' '.join(argv)}".rstrip())
    print(f"device: {jax.devices()[0].device_kind}, jax {jax.__version__}; T={T} B={B} N={N} K={K} H={H} bf16")
    if ref is not None:
        print(f"cudnn forward+backward: {base_s * 1e3:.2f} ms ({flops / base_s / 1e12:.0f} TFLOP/s)\n")
    print("| block_q | block_k | warps | stages | fwd ms | fwd+bwd ms | TFLOP/s | max abs diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: r.get("fwd_bwd", float("inf"))):
        if "error" in r:
            print(f"| {r['block_q']} | {r['block_k']} | {r['num_warps']} | {r['num_stages']} | {r['error']} | | | |")
            continue
        print(
            f"| {r['block_q']} | {r['block_k']} | {r['num_warps']} | {r['num_stages']} | {r['fwd'] * 1e3:.2f} | "
            f"{r['fwd_bwd'] * 1e3:.2f} | {flops / r['fwd_bwd'] / 1e12:.0f} | {r['diff']:.3g} |"
        )
    return rows


def run(args, argv: Sequence[str]) -> dict:
    if args.tune:
        return {"tune": tune(args, argv)}
    flash = flash_rows(args)
    decode = decode_rows(args)
    report(args, argv, flash, decode)
    return {"device": jax.devices()[0].device_kind, "flash": flash, "decode": decode}
