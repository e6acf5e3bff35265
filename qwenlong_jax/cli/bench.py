"""python -m qwenlong_jax.bench {attention,kernels,rollout,sampler,train} [flags]

The benchmarks (qwenlong_jax/bench/): each prints a markdown table and the exact command, and
compares against a baseline measured in the same run (docs/benchmarks.md has the figures).
`python -m qwenlong_jax.bench NAME --help` prints NAME's description and flags.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

from absl import flags as absl_flags

from qwenlong_jax.cli import flags, int_list_flag

BENCHMARKS = ("attention", "kernels", "rollout", "sampler", "train")
_THREADS = "torch threads (default: the cores this process may use)"


def _attention(fv: absl_flags.FlagValues) -> None:
    int_list_flag.DEFINE_integers("lengths", [2048, 4096, 8192, 16384, 32768], "sequence lengths", flag_values=fv)
    absl_flags.DEFINE_integer("batch", 1, "batch size", flag_values=fv)
    absl_flags.DEFINE_integer("heads", 8, "query heads", flag_values=fv)
    absl_flags.DEFINE_integer("kv_heads", 2, "key/value heads", flag_values=fv)
    absl_flags.DEFINE_integer("head_dim", 128, "head size", flag_values=fv)
    absl_flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float32"], "activation dtype", flag_values=fv)


def _kernels(fv: absl_flags.FlagValues) -> None:
    int_list_flag.DEFINE_integers("lengths", [4096, 16384, 32768], "forward+backward: sequence lengths", flag_values=fv)
    absl_flags.DEFINE_integer("batch", 1, "forward+backward: batch size", flag_values=fv)
    absl_flags.DEFINE_integer("heads", 40, "query heads (the 32B model's)", flag_values=fv)
    absl_flags.DEFINE_integer("kv_heads", 8, "key/value heads", flag_values=fv)
    absl_flags.DEFINE_integer("head_dim", 128, "head size", flag_values=fv)
    absl_flags.DEFINE_integer("decode_samples", 16, "decode: samples sharing one prompt cache (G)", flag_values=fv)
    int_list_flag.DEFINE_integers("decode_lengths", [32768, 65536], "decode: prompt cache lengths", flag_values=fv)
    absl_flags.DEFINE_integer("iters", 10, "timed calls (median reported)", flag_values=fv)
    absl_flags.DEFINE_integer(
        "tune", 0, "sweep the flash kernels' blocks and Triton parameters at this length", flag_values=fv
    )


def _rollout(fv: absl_flags.FlagValues) -> None:
    absl_flags.DEFINE_string("phase", "rl_320", "the config's RL phase whose prompts are sampled", flag_values=fv)
    absl_flags.DEFINE_string(
        "run",
        "",
        "a finished run's workdir: its exported policy (hf/) samples, its "
        "metrics.jsonl gives the run's own response lengths",
        flag_values=fv,
    )
    absl_flags.DEFINE_string("init_from", "", "an HF checkpoint to sample with", flag_values=fv)
    absl_flags.DEFINE_integer(
        "prompts", 24, "prompts per rollout (the default run's generation batch is 24)", flag_values=fv
    )
    absl_flags.DEFINE_integer("skip", 0, "start at this prompt of the phase", flag_values=fv)
    absl_flags.DEFINE_integer("slots", 8, "prompt slots of the refill samplers", flag_values=fv)
    absl_flags.DEFINE_integer("lockstep-batch", 0, "prompts per lockstep call (0: all)", flag_values=fv)
    absl_flags.DEFINE_integer("chunk", 16, "refill: decode steps per call at most", flag_values=fv)
    absl_flags.DEFINE_boolean("drain", True, "refill: pack the busy rows once every sample started", flag_values=fv)
    absl_flags.DEFINE_integer("prompt-slots", 0, "per-sample: prompt caches (default 2 x slots)", flag_values=fv)
    absl_flags.DEFINE_integer("block", 1, "per-sample: rows per block (divides G)", flag_values=fv)
    absl_flags.DEFINE_string(
        "samplers", "lockstep,lockstep/B,group_refill,per-sample", "comma-separated, lockstep included", flag_values=fv
    )
    absl_flags.DEFINE_integer("rounds", 3, "interleaved rounds", flag_values=fv)
    absl_flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=fv)
    absl_flags.DEFINE_boolean(
        "profile",
        False,
        "after the rounds, one more run of each sampler with its "
        "jitted calls timed one by one: prefill / decode / host",
        flag_values=fv,
    )


def _model(fv: absl_flags.FlagValues, prompt_len: int) -> None:
    absl_flags.DEFINE_integer("prompt_len", prompt_len, "prompt tokens", flag_values=fv)
    absl_flags.DEFINE_integer("d_model", 256, "model width", flag_values=fv)
    absl_flags.DEFINE_integer("layers", 4, "model depth", flag_values=fv)
    absl_flags.DEFINE_integer("heads", 4, "query heads", flag_values=fv)
    absl_flags.DEFINE_integer("kv_heads", 2, "key/value heads", flag_values=fv)
    absl_flags.DEFINE_integer("vocab", 8192, "vocabulary size", flag_values=fv)
    absl_flags.DEFINE_integer("threads", len(os.sched_getaffinity(0)), _THREADS, flag_values=fv)


def _sampler(fv: absl_flags.FlagValues) -> None:
    _model(fv, 4096)
    absl_flags.DEFINE_integer("num_samples", 8, "samples of the prompt (G)", flag_values=fv)
    absl_flags.DEFINE_integer("new_tokens", 128, "tokens generated per sample", flag_values=fv)
    absl_flags.DEFINE_integer("prefill_chunk", 512, "prompt tokens per prefill step", flag_values=fv)
    absl_flags.DEFINE_integer("rounds", 3, "interleaved ours/HF end-to-end rounds", flag_values=fv)
    absl_flags.DEFINE_integer("repeats", 2, "warm runs of each decode-only part (min)", flag_values=fv)


def _train(fv: absl_flags.FlagValues) -> None:
    from qwenlong_jax.bench.train import VARIANTS

    _model(fv, 4096)
    absl_flags.DEFINE_integer("group", 8, "responses per prompt (G)", flag_values=fv)
    absl_flags.DEFINE_integer("resp_len", 256, "tokens per response", flag_values=fv)
    absl_flags.DEFINE_string(
        "attention",
        "blockwise,flash,xla",
        "our attention impls, comma-separated (blockwise, flash, xla)",
        flag_values=fv,
    )
    absl_flags.DEFINE_enum(
        "remat", "none", ["none", "full", "dots", "dots_no_batch"], "our rematerialization", flag_values=fv
    )
    absl_flags.DEFINE_integer("rounds", 1, "interleaved rounds of all variants", flag_values=fv)
    absl_flags.DEFINE_integer("warmup", 0, "untimed full-size runs", flag_values=fv)
    absl_flags.DEFINE_integer("iters", 2, "timed runs (median reported)", flag_values=fv)
    absl_flags.DEFINE_integer("matmul_n", 4096, "size of the matmuls that measure the peak", flag_values=fv)
    absl_flags.DEFINE_string(
        "variants", ",".join(VARIANTS), "comma-separated, from " + ",".join(VARIANTS), flag_values=fv
    )
    absl_flags.DEFINE_string("worker", None, "(set by the benchmark for its worker processes)", flag_values=fv)
    absl_flags.DEFINE_string("model_dir", None, "(set by the benchmark for its worker processes)", flag_values=fv)


_DEFINE = {"attention": _attention, "kernels": _kernels, "rollout": _rollout, "sampler": _sampler, "train": _train}


def _doc(name: str) -> str:
    """Benchmark `name`'s description (its module docstring), read without importing it (jax)."""
    spec = importlib.util.find_spec(f"qwenlong_jax.bench.{name}")
    if spec is None or spec.origin is None:
        raise flags.FlagError(f"no benchmark module qwenlong_jax.bench.{name}")
    with open(spec.origin, encoding="utf-8") as f:
        return ast.get_docstring(ast.parse(f.read())) or ""


def parse_args(name: str, argv: Sequence[str]):
    """Benchmark `name`'s flag values (a Namespace; rollout's with `cfg`, its parsed --config);
    FlagError, one line."""
    config = os.path.join(flags.REPO, "configs", "default.py") if name == "rollout" else None
    cmd = flags.Command(__name__, _doc(name), argv, config=config)
    _DEFINE[name](cmd.fv)
    args = cmd.parse()
    if config:
        from qwenlong_jax.config import ConfigError

        try:
            args.cfg = cmd.config()
        except ConfigError as e:
            raise flags.FlagError(str(e)) from None
    return args


def main(argv: Sequence[str] | None = None):
    """Run benchmark argv[0] with the flags after it; what its `run` returns."""
    argv = flags.arguments(argv)
    if argv and argv[0] in flags.HELP:
        print(__doc__.strip("\n"))
        sys.exit(0)
    if not argv or argv[0] not in BENCHMARKS:
        flags.fail(
            f"the first argument names the benchmark: one of {', '.join(BENCHMARKS)} "
            f"(got {argv[0] if argv else 'none'})"
        )
    try:
        args = parse_args(argv[0], argv[1:])
    except flags.FlagError as e:
        flags.fail(e)
    return importlib.import_module(f"qwenlong_jax.bench.{argv[0]}").run(args, argv[1:])
