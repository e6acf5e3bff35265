"""Attention memory benchmark: forward+backward peak memory, `xla` (reference) vs `flash` and
`blockwise` (kernels/blockwise.py, the compiled CPU path).

    python -m qwenlong_jax.bench attention [--lengths 2048,4096,8192,16384,32768]
        [--heads 8 --kv_heads 2 --head_dim 128 --batch 1 --dtype bfloat16]

Memory is XLA's compiled memory analysis of one jitted forward+backward (out and dq/dk/dv from a
vjp), NOT a run: on CPU the flash kernel runs in Pallas interpret mode (slow) and the xla path at
32K would need tens of GB; blockwise is the compiled program itself. "peak" = arguments + outputs +
temporaries of the compiled program (XLA's buffer assignment; an upper bound of what is live at
once). Flash's number is for the interpret-mode lowering (a loop over the grid with dynamic
slices), which keeps the same O(T) working set as the GPU/TPU kernel but is not that kernel's
measured footprint.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp

import kernels


def _memory(attn, B: int, T: int, N: int, K: int, H: int, dtype) -> dict[str, int]:
    def fwd_bwd(q, k, v, ct):
        out, vjp = jax.vjp(lambda q, k, v: attn(q, k, v, causal=True), q, k, v)
        return (out, *vjp(ct))

    q = jax.ShapeDtypeStruct((B, T, N, H), dtype)
    kv = jax.ShapeDtypeStruct((B, T, K, H), dtype)
    mem = jax.jit(fwd_bwd).lower(q, kv, kv, q).compile().memory_analysis()
    if mem is None:
        raise RuntimeError(f"XLA gives no memory analysis on {jax.default_backend()}")
    io = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
    return {"temp": mem.temp_size_in_bytes, "peak": io + mem.temp_size_in_bytes}


def _mib(x: int) -> str:
    return f"{x / 2**20:,.1f}"


def run(args, argv: Sequence[str]) -> None:
    """The benchmark for the flag values `args` (qwenlong_jax/cli/bench.py); `argv` is printed
    as the command."""
    lengths = list(args.lengths)
    dtype = jnp.dtype(args.dtype)
    shape = (args.batch, args.heads, args.kv_heads, args.head_dim)
    impls = {
        "xla": kernels.reference_attention,
        "flash": kernels.flash_attention,
        "blockwise": kernels.blockwise_attention,
    }

    rows = []
    for T in lengths:
        m = {name: _memory(fn, args.batch, T, *shape[1:], dtype) for name, fn in impls.items()}
        rows.append((T, m))
        print(f"T={T}: " + ", ".join(f"{n} {_mib(m[n]['peak'])} MiB" for n in impls), file=sys.stderr)

    print(
        f"\nForward+backward causal attention, B={args.batch} N={args.heads} K={args.kv_heads} "
        f"H={args.head_dim} {args.dtype}, backend={jax.default_backend()} (flash in interpret "
        f"mode); memory = XLA compiled memory analysis (not run).\n"
    )
    print(
        "| tokens | xla peak MiB | xla temp MiB | flash peak MiB | flash temp MiB "
        "| blockwise peak MiB | blockwise temp MiB | xla / flash | xla / blockwise |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for T, m in rows:
        print(
            f"| {T} | {_mib(m['xla']['peak'])} | {_mib(m['xla']['temp'])} | "
            f"{_mib(m['flash']['peak'])} | {_mib(m['flash']['temp'])} | "
            f"{_mib(m['blockwise']['peak'])} | {_mib(m['blockwise']['temp'])} | "
            f"{m['xla']['peak'] / m['flash']['peak']:.1f}x | "
            f"{m['xla']['peak'] / m['blockwise']['peak']:.1f}x |"
        )
    (T0, m0), (T1, m1) = rows[0], rows[-1]
    print()
    for name in ("flash", "blockwise"):
        growth = m1[name]["peak"] / m0[name]["peak"]
        ratio = m1[name]["peak"] / m1["xla"]["peak"]
        print(
            f"{name} peak grows x{growth:.1f} for x{T1 / T0:.0f} tokens "
            f"({'linear' if growth <= 1.25 * T1 / T0 else 'SUPER-LINEAR'}); at {T1} tokens "
            f"{name} uses {ratio:.4f} of xla's peak memory "
            f"({'meets' if ratio <= 1 / 8 else 'MISSES'} the <= 1/8 target)."
        )
    print(f"xla grows x{m1['xla']['peak'] / m0['xla']['peak']:.1f}.")
    print(f"\ncommand: python -m qwenlong_jax.bench attention {' '.join(argv)}".rstrip())
