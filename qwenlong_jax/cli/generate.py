"""Sample from a checkpoint: `python -m qwenlong_jax.generate`.

    python -m qwenlong_jax.generate --checkpoint /path/to/hf_dir --prompt "What is 2+3?" --chat \\
        --max_new_tokens 128 --temperature 0.7 --top_p 0.95 --num_samples 2 --seed 0

Loads an HF directory (config.json + safetensors) with `models.load_hf_checkpoint` and a
tokenizer (`--tokenizer`, else the checkpoint directory when it holds tokenizer files, else the
embedded sentencepiece default), runs the jitted group sampler and prints each sample's text,
finish reason, and the decode speed. Compile time is measured and reported separately from the
generation time (the sampler is compiled ahead of time), so tokens/s is the steady-state rate.
Only HF directories are read; an orbax training checkpoint is exported to HF first.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags as absl_flags

from qwenlong_jax import models, paths, sampling
from qwenlong_jax.cli import flags
from qwenlong_jax.run.step_shapes import PREFILL_CHUNK


def parse_args(argv: Sequence[str] | None = None):
    """The flag values (a Namespace); a bad flag or value exits with one `error:` line."""
    cmd = flags.Command(__name__, __doc__, argv)
    fv = cmd.fv
    absl_flags.DEFINE_string("checkpoint", None, "HF model directory", flag_values=fv)
    absl_flags.DEFINE_string("prompt", None, "the text to continue (with --chat, the user's message)", flag_values=fv)
    absl_flags.DEFINE_boolean("chat", False, "wrap the prompt as one user chat turn", flag_values=fv)
    absl_flags.DEFINE_string("tokenizer", None, "tokenizer dir or .model (default: see above)", flag_values=fv)
    absl_flags.DEFINE_integer("max_new_tokens", 128, "tokens generated at most", flag_values=fv)
    absl_flags.DEFINE_float("temperature", 0.0, "0 = greedy", flag_values=fv)
    absl_flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass", flag_values=fv)
    absl_flags.DEFINE_integer("top_k", 0, "top-k sampling (0 = off)", flag_values=fv)
    absl_flags.DEFINE_float("min_p", 0.0, "min-p sampling (0 = off)", flag_values=fv)
    absl_flags.DEFINE_integer("num_samples", 1, "samples of the prompt", flag_values=fv)
    absl_flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=fv)
    absl_flags.DEFINE_integer("prefill_chunk", PREFILL_CHUNK, "prompt tokens per prefill step", flag_values=fv)
    absl_flags.DEFINE_enum("decode_impl", "xla", list(sampling.DECODE_IMPLS), "decode attention", flag_values=fv)
    absl_flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "parameter dtype", flag_values=fv)
    try:
        return cmd.parse(required=("checkpoint", "prompt"))
    except flags.FlagError as e:
        flags.fail(e)


def check_args(args) -> None:
    """Flag values that cannot work, as one `error:` line (before anything loads)."""
    if not args.prompt.strip():
        sys.exit("error: --prompt is empty; give the text to continue (with --chat, the user's message)")
    bad = [
        (f, v, want)
        for f, v, ok, want in (
            ("--max_new_tokens", args.max_new_tokens, args.max_new_tokens >= 1, ">= 1"),
            ("--num_samples", args.num_samples, args.num_samples >= 1, ">= 1"),
            ("--temperature", args.temperature, 0 <= args.temperature < math.inf, "a finite number >= 0"),
            ("--top_p", args.top_p, 0 < args.top_p <= 1, "in (0, 1]"),
            ("--top_k", args.top_k, args.top_k >= 0, ">= 0"),
            ("--min_p", args.min_p, 0 <= args.min_p < 1, "in [0, 1)"),
            ("--prefill_chunk", args.prefill_chunk, args.prefill_chunk >= 1, ">= 1"),
        )
        if not ok
    ]
    if bad:
        f, v, want = bad[0]
        sys.exit(f"error: {f} must be {want}, got {v}")
    try:
        paths.check_readable(args.checkpoint, "--checkpoint", "dir")
        if args.tokenizer:
            paths.check_readable(args.tokenizer, "--tokenizer")
    except paths.PathError as e:
        sys.exit(f"error: {e}")
    if not paths.exists(args.checkpoint):
        sys.exit(f"error: --checkpoint {args.checkpoint} does not exist")
    if not paths.exists(paths.join(args.checkpoint, "config.json")):
        sys.exit(
            f"error: --checkpoint {args.checkpoint} has no config.json (an HF model directory is "
            "needed; a training run exports one to WORKDIR/hf)"
        )
    try:
        paths.check_readable(paths.join(args.checkpoint, "config.json"), "--checkpoint's config.json", "file")
    except paths.PathError as e:
        sys.exit(f"error: {e}")


def check_fits(cfg: models.ModelConfig, S: int, args) -> None:
    """Refuse, in one line with the planner's figure, a generation whose KV cache and sampling
    work (memory_terms.sample_memory, one device) exceed the device's memory (on CPU, the
    host's) before anything compiles."""
    from qwenlong_jax.capacity import planner
    from qwenlong_jax.capacity.memory_terms import MeshSizes, sample_memory

    limit = planner.device_memory_bytes()
    kv, work = sample_memory(cfg, MeshSizes(1, 1, 1, 1), 1, args.num_samples, S, args.max_new_tokens)
    need = cfg.num_params * (2 if args.dtype == "bfloat16" else 4) + kv + work
    if limit and need > limit:
        sys.exit(
            f"error: generating {args.num_samples} x {args.max_new_tokens} tokens after the prompt "
            f"(padded to {S} tokens) needs "
            f"~{need / 2**30:.1f} GiB, {limit / 2**30:.1f} GiB available; lower --max_new_tokens or "
            "--num_samples"
        )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    check_args(args)
    from qwenlong_jax.data.tokenizer import find_tokenizer, load_tokenizer

    args.checkpoint = paths.local_copy(args.checkpoint)
    try:
        tok = load_tokenizer(find_tokenizer(args.tokenizer, args.checkpoint))
        cfg, params = models.load_hf_checkpoint(args.checkpoint, dtype=jnp.dtype(args.dtype))
    except (models.CheckpointError, ValueError, OSError, RuntimeError) as e:  # one line, no traceback
        sys.exit(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    cfg = cfg.replace(dtype=args.dtype)
    if tok.vocab_size > cfg.vocab_size:
        sys.exit(f"error: tokenizer vocab {tok.vocab_size} exceeds the model's {cfg.vocab_size}")
    prompt = tok.chat_prompt(args.prompt) if args.chat else tok.encode(args.prompt)
    if not prompt:
        sys.exit(f"error: --prompt {args.prompt!r} encodes to no token")
    strategy = sampling.from_flags(args.temperature, args.top_p, args.top_k, args.min_p)
    S = sampling.bucket_length(len(prompt), args.prefill_chunk)
    check_fits(cfg, S, args)
    tokens_BS, lens_B = sampling.pad_prompts([prompt], S)
    keys_BG = sampling.sample_keys(args.seed, [0], args.num_samples)
    static = dict(
        max_new_tokens=args.max_new_tokens,
        strategy=strategy,
        eos_ids=tuple(tok.eos_ids),
        prefill_chunk=args.prefill_chunk,
        decode_impl=args.decode_impl,
    )

    t0 = time.perf_counter()
    run = sampling.sample_groups.lower(cfg, params, tokens_BS, lens_B, keys_BG, **static).compile()
    t1 = time.perf_counter()
    out = jax.device_get(jax.block_until_ready(run(params, tokens_BS, lens_B, keys_BG)))
    t2 = time.perf_counter()

    generated = int(np.sum(out.lengths_BG))
    for g in range(args.num_samples):
        n = int(out.lengths_BG[0, g])
        reason = sampling.FINISH_REASONS[int(out.finish_BG[0, g])]
        print(f"--- sample {g} ({n} tokens, {reason})")
        print(tok.decode(out.tokens_BGR[0, g, :n].tolist()))
    print(
        f"--- prompt {len(prompt)} tokens; compile {t1 - t0:.2f}s; generated {generated} tokens "
        f"in {t2 - t1:.3f}s: {generated / (t2 - t1):.1f} tokens/s "
        f"({int(out.steps)} decode steps, prefill included)"
    )
