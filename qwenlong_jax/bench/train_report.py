"""The training-step benchmark's report (bench/train.py): the table, the ratios and their targets.

Model FLOPs: 6 x P_mm x tokens + 12 x L x N x H x visible (q, k) pairs, where P_mm are the matmul
weights (layers + LM head) and tokens/pairs those of each layout. Speed ratios are taken round by
round (`round_ratio`) and their median reported with their range.
"""
from __future__ import annotations

import statistics
from typing import Sequence


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


def ratio_text(ratios: list[float] | None, fallback: float) -> tuple[float, str]:
    if not ratios or len(ratios) < 2:
        return fallback, ""
    return statistics.median(ratios), f", rounds {min(ratios):.1f}-{max(ratios):.1f}x"


def report(args, argv, res: dict, peak: float, runs: Sequence[dict] = ()) -> None:
    torch_attn = res.get("torch", {}).get("attn", "?")
    print(f"\nGRPO loss+grad of one group: prompt {args.prompt_len}, G={args.group}, responses "
          f"{args.resp_len}; Qwen2 d={args.d_model} L={args.layers} N={args.heads} K={args.kv_heads} "
          f"V={args.vocab} f32, remat={args.remat}; ours: jax {_platform()} (blockwise = "
          f"compiled lax blocks, flash = Pallas interpret mode); torch {args.threads} threads, attn_implementation={torch_attn}. "
          f"Matmul peak (best f32 {args.matmul_n}^3 matmul in jax, this run): "
          f"{peak / 1e9:.1f} GFLOP/s. Time: median of {args.iters} x {args.rounds} round(s) "
          f"(s each in brackets).\n")
    print("| variant | rows x tokens | time s | peak RSS delta GiB | XLA compiled peak GiB "
          "| model GFLOP | GFLOP/s | of matmul peak | loss | grad norm |")
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
        print(f"| {key} | {rows} | {t:.1f} ({each}) | {_gib(r['rss_peak_delta'])} | {xla} "
              f"| {fl / 1e9:.0f} | {fl / t / 1e9:.1f} | {fl / t / peak:.0%} | {r['loss']:.6f} "
              f"| {r['grad_norm']:.6f} |")
    print()
    for attn in args.attention.split(","):
        p, n = res.get(f"packed/{attn}", {}), res.get(f"naive/{attn}", {})
        if "xla_peak" in p and "xla_peak" in n:
            xmem = n["xla_peak"] / p["xla_peak"]
            line = f"- {attn}: packed vs naive, XLA compiled peak {xmem:.1f}x less ({_met(xmem, 4)})"
            if f"packed/{attn}" in med and f"naive/{attn}" in med:
                speed, rng = ratio_text(round_ratio(runs, f"naive/{attn}", f"packed/{attn}"),
                                         med[f"naive/{attn}"] / med[f"packed/{attn}"])
                rss = n["rss_peak_delta"] / p["rss_peak_delta"]
                line += (f"; peak RSS delta {rss:.1f}x less ({_met(rss, 4)}); "
                         f"time ratio naive/packed {speed:.1f}x{rng} ({_met(speed, 5)})")
            else:
                line += "; time not measured (a variant was not run)"
            print(line)
        if f"packed/{attn}" in med and "torch" in med:
            speed, rng = ratio_text(round_ratio(runs, "torch", f"packed/{attn}"),
                                     med["torch"] / med[f"packed/{attn}"])
            rss = res["torch"]["rss_peak_delta"] / p["rss_peak_delta"]
            print(f"- {attn}: packed vs torch naive, time ratio torch/packed {speed:.1f}x{rng} "
                  f"({_met(speed, 3)}); peak RSS delta ratio torch/packed {rss:.1f}x")
        if f"packed/{attn}" in med:
            frac = model_flops(args, "packed") / med[f"packed/{attn}"] / peak
            print(f"- {attn}: packed step at {frac:.0%} of the matmul peak (target >= 40%: "
                  f"{'met' if frac >= 0.4 else 'MISSED'}); compile {p['compile_s']:.0f} s, not timed")
    print("\nmodel FLOPs = 6 x P_mm x tokens + 12 x L x N x H x visible (q,k) pairs "
          f"(P_mm = {_p_mm(args):,} matmul weights incl. the tied LM head)")
    print(f"command: python -m qwenlong_jax.bench train {' '.join(argv)}".rstrip())


def _platform() -> str:
    import jax

    return jax.devices()[0].platform
