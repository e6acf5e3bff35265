"""What one evaluation is asked to do (the evaluate command's flags, same names), and everything
about it that can be checked or resolved before a model loads.

    req = EvalRequest(checkpoint="runs/default/hf", out="eval_out", sweep=True, lengths=(1024, 2048))
    req = localize(req)       # object-store inputs read from local copies (paths.py)
    check_request(req)        # EvalError, one line naming the flag
"""

from __future__ import annotations

import dataclasses
import math
import os

from qwenlong_jax import paths
from qwenlong_jax.eval import benchmarks as bench_lib, generation
from qwenlong_jax.eval.benchmarks import EvalError


@dataclasses.dataclass(frozen=True)
class EvalRequest:
    """Defaults follow docs/recipe.md "Evaluation" (one sample at temperature 0.7, top-p 0.95, up
    to 10,000 new tokens, inputs middle-truncated to 120,000 tokens)."""

    checkpoint: str
    out: str
    tokenizer: str = ""  # '' = the checkpoint's
    dtype: str = "float32"
    model_name: str = ""  # table row name ('' = the checkpoint dir's name)
    benchmarks: str | None = None  # comma list (None: the paper's seven)
    data_dir: str | None = None
    bench_file: tuple[str, ...] = ()  # NAME=PATH
    limit: int | None = None
    max_input_tokens: int = 120_000
    max_new_tokens: int = 10_000
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    greedy: bool = False
    num_samples: int = 1
    pass_k: tuple[int, ...] = (1,)
    seed: int = 0
    batch_size: int = 8
    mesh: tuple[int, ...] | None = None  # data,fsdp,tensor,sequence
    judge_url: str = ""
    judge_model: str = ""
    judge_api_key_env: str = "JUDGE_API_KEY"
    extra_rows: str = "paper"
    no_progress: bool = False
    sweep: bool = False
    lengths: tuple[int, ...] = (1024, 2048, 4096, 8192, 16384)
    per_length: int = 16
    sweep_seed: int = 1234


def sampling_settings(req: EvalRequest) -> generation.SamplingSettings:
    if req.greedy:
        return generation.SamplingSettings.greedy(req.max_new_tokens, req.num_samples)
    return generation.SamplingSettings(
        req.max_new_tokens, req.temperature, req.top_p, req.top_k, req.num_samples, req.seed
    )


def bench_files(req: EvalRequest) -> dict[str, str]:
    files = {}
    for item in req.bench_file:
        name, sep, path = item.partition("=")
        if not sep or name not in bench_lib.BENCHMARKS:
            raise EvalError(f"--bench_file {item!r}: expected NAME=PATH with NAME in {','.join(bench_lib.BENCHMARKS)}")
        files[name] = path
    return files


def make_mesh(sizes):
    if sizes is None:
        return None
    from qwenlong_jax.parallel import sharding

    if len(sizes) != 4:
        raise EvalError(f"--mesh needs 4 sizes (data,fsdp,tensor,sequence), got {list(sizes)}")
    try:
        return sharding.make_mesh(sharding.MeshConfig(*sizes))
    except ValueError as e:
        raise EvalError(str(e)) from None


def make_judge(req: EvalRequest):
    if not req.judge_url and not req.judge_model:
        return None
    if not (req.judge_url and req.judge_model):
        raise EvalError("--judge_url and --judge_model go together")
    from qwenlong_jax.rewards import JudgeConfig, OpenAIJudge

    env = req.judge_api_key_env or None
    if env and env not in os.environ:
        raise EvalError(
            f"--judge_api_key_env: ${env} is not set; export it, or pass "
            "--judge_api_key_env '' for an endpoint that needs no key"
        )
    try:
        return OpenAIJudge(
            JudgeConfig(
                url=req.judge_url, model=req.judge_model, api_key_env=env or "", timeout_s=60.0, max_concurrency=16
            )
        )
    except ValueError as e:
        raise EvalError(f"judge: {e}") from None


def localize(req: EvalRequest) -> EvalRequest:
    """Object-store inputs (paths.py): the checkpoint, --data_dir and --bench_file files are
    read from local copies. --out must be local (predictions are appended as they come)."""
    if paths.is_remote(req.out):
        raise EvalError(
            f"--out {req.out}: must be a local directory (predictions are appended as they "
            "are made); copy it to the store afterwards"
        )
    try:
        checkpoint = paths.local_copy(req.checkpoint) if paths.is_remote(req.checkpoint) else req.checkpoint
        data_dir = paths.local_copy(req.data_dir) if req.data_dir and paths.is_remote(req.data_dir) else req.data_dir
        files = tuple(
            f"{n}={paths.local_copy(p)}" if sep and paths.is_remote(p) else f"{n}{sep}{p}"
            for n, sep, p in (item.partition("=") for item in req.bench_file)
        )
    except paths.PathError as e:
        raise EvalError(str(e)) from None
    return dataclasses.replace(req, checkpoint=checkpoint, data_dir=data_dir, bench_file=files)


def check_request(req: EvalRequest) -> None:
    """Values and local paths that cannot work, as one EvalError, before anything loads
    (generate's and train's checks: numbers in range and finite, paths readable and of the
    right kind, a sweep whose generation cannot fit in memory refused with the figure). The
    checkpoint is checked where it is loaded (generation.load_model), after the benchmark files."""
    checks = [
        ("--max_new_tokens", req.max_new_tokens, req.max_new_tokens >= 1, ">= 1"),
        ("--num_samples", req.num_samples, req.num_samples >= 1, ">= 1"),
        ("--temperature", req.temperature, 0 <= req.temperature < math.inf, "a finite number >= 0"),
        ("--top_p", req.top_p, 0 < req.top_p <= 1, "in (0, 1]"),
        ("--top_k", req.top_k, req.top_k >= 0, ">= 0"),
        ("--batch_size", req.batch_size, req.batch_size >= 1, ">= 1"),
        ("--max_input_tokens", req.max_input_tokens, req.max_input_tokens >= 1, ">= 1"),
        ("--limit", req.limit, req.limit is None or req.limit >= 1, ">= 1"),
        ("--per_length", req.per_length, req.per_length >= 1, ">= 1"),
        ("--lengths", list(req.lengths), bool(req.lengths) and min(req.lengths) >= 1, "one or more lengths, each >= 1"),
    ]
    for flag, value, ok, want in checks:
        if not ok:
            raise EvalError(f"{flag} must be {want}, got {value}")
    try:
        for flag, given, kind in (("--tokenizer", req.tokenizer, "any"), ("--data_dir", req.data_dir, "dir")):
            if given:
                paths.check_readable(given, flag, kind)
        for item in req.bench_file:
            name, sep, path = item.partition("=")
            if sep:
                paths.check_readable(path, f"--bench_file {name}", "file")
        if not paths.is_remote(req.out) and os.path.exists(req.out) and not os.path.isdir(req.out):
            raise paths.PathError(f"--out {req.out!r} is a file, not a directory")
    except paths.PathError as e:
        raise EvalError(str(e)) from None
    if req.sweep:
        check_sweep_fits(req)


def check_sweep_fits(req: EvalRequest) -> None:
    """The sweep's longest length, generated --batch_size prompts at a time, must fit in the
    device's memory (on CPU, the host's): memory_terms.sample_memory, as the trainer's planner."""
    from qwenlong_jax import models
    from qwenlong_jax.capacity import planner
    from qwenlong_jax.capacity.memory_terms import MeshSizes, sample_memory
    from qwenlong_jax.data.run_data import HELDOUT_PROMPT_OVERHEAD
    from qwenlong_jax.run.step_shapes import PREFILL_CHUNK
    from qwenlong_jax.sampling import sampler

    limit = planner.device_memory_bytes()
    try:
        cfg = models.read_hf_config(req.checkpoint)
    except (ValueError, OSError):
        return  # load_model reports the checkpoint's problem in its own line
    L = max(req.lengths)
    S = sampler.bucket_length(L + HELDOUT_PROMPT_OVERHEAD, PREFILL_CHUNK)
    kv, work = sample_memory(cfg, MeshSizes(1, 1, 1, 1), req.batch_size, req.num_samples, S, req.max_new_tokens)
    need = cfg.num_params * (2 if req.dtype == "bfloat16" else 4) + kv + work
    if limit and need > limit:
        raise EvalError(
            f"--lengths {L}: generating {req.batch_size} x {req.num_samples} x {req.max_new_tokens} "
            f"tokens needs ~{need / 2**30:.1f} GiB, {limit / 2**30:.1f} GiB available; lower "
            "--lengths, --max_new_tokens or --batch_size"
        )
