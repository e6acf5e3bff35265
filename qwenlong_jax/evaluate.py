"""Evaluate a checkpoint on the paper's long-document QA benchmarks, or run the synthetic sweep.

    python -m qwenlong_jax.evaluate --checkpoint DIR --data_dir D --out OUT \
        --benchmarks docmath,frames,2wikimqa,hotpotqa,musique,narrativeqa,qasper,ours
    python -m qwenlong_jax.evaluate --checkpoint DIR --out OUT --sweep \
        --lengths 1024,2048,4096,8192,16384 --per_length 16

Benchmark files are `{data_dir}/{name}.jsonl` (override one with `--bench_file name=PATH`);
formats in eval/benchmarks.py. Defaults follow docs/recipe.md "Evaluation": one sample at
temperature 0.7, top-p 0.95, up to 10,000 new tokens, inputs middle-truncated to 120,000 tokens,
score max(rule, judge) (the judge only with --judge_url/--judge_model). `--greedy` decodes
greedily instead. OUT gets predictions/{benchmark}.jsonl (one line per (id, sample); a rerun
skips the ids already there), summary.json, table.md (paper layout, with the paper's reported
averages unless --extra_rows '') and scores.png. The sweep writes sweep.json/.md/.png.

Errors a user can fix (missing or malformed benchmark file, bad checkpoint, settings that differ
from the predictions already in OUT) end the program with one line, no traceback.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from qwenlong_jax import paths
from qwenlong_jax.eval import benchmarks as bench_lib
from qwenlong_jax.eval import metrics, report, runner
from qwenlong_jax.eval.benchmarks import EvalError
from qwenlong_jax.eval.report import PAPER_BENCHMARKS


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="HF model dir or one our trainer wrote")
    p.add_argument("--tokenizer", default="", help="tokenizer path ('' = the checkpoint's)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--model_name", default="", help="table row name ('' = checkpoint dir name)")
    p.add_argument("--out", required=True)
    p.add_argument("--benchmarks", default=None,
                   help=f"comma list of {','.join(bench_lib.BENCHMARKS)} "
                        "(default: the paper's seven)")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--bench_file", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--limit", type=int, default=None, help="first N examples per benchmark")
    p.add_argument("--max_input_tokens", type=int, default=120_000)
    p.add_argument("--max_new_tokens", type=int, default=10_000)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--greedy", action="store_true", help="temperature 0 (overrides the above)")
    p.add_argument("--num_samples", type=int, default=1)
    p.add_argument("--pass_k", type=_ints, default=[1], help="comma list of k for pass@k")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=8, help="prompts per sampler call")
    p.add_argument("--mesh", type=_ints, default=None,
                   help="data,fsdp,tensor,sequence sizes (one may be -1), e.g. --mesh=-1,1,1,1")
    p.add_argument("--judge_url", default="", help="OpenAI-compatible base URL incl. /v1")
    p.add_argument("--judge_model", default="")
    p.add_argument("--judge_api_key_env", default="JUDGE_API_KEY",
                   help="NAME of the env var with the key, as train's judge.api_key_env ('' = no key)")
    p.add_argument("--extra_rows", default="paper",
                   help="JSON/CSV rows added to the table ('paper' = paper_table4.json, '' = none)")
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--sweep", action="store_true", help="run the synthetic length sweep")
    p.add_argument("--lengths", type=_ints, default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--per_length", type=int, default=16)
    p.add_argument("--sweep_seed", type=int, default=1234)
    return p.parse_args(argv)


def _sampling(args) -> runner.SamplingSettings:
    if args.greedy:
        return runner.SamplingSettings.greedy(args.max_new_tokens, args.num_samples)
    return runner.SamplingSettings(args.max_new_tokens, args.temperature, args.top_p, args.top_k,
                                   args.num_samples, args.seed)


def _bench_files(args) -> dict[str, str]:
    files = {}
    for item in args.bench_file:
        name, sep, path = item.partition("=")
        if not sep or name not in bench_lib.BENCHMARKS:
            raise EvalError(f"--bench_file {item!r}: expected NAME=PATH with NAME in "
                            f"{','.join(bench_lib.BENCHMARKS)}")
        files[name] = path
    return files


def _mesh(sizes):
    if sizes is None:
        return None
    from qwenlong_jax.parallel import sharding
    if len(sizes) != 4:
        raise EvalError(f"--mesh needs 4 sizes (data,fsdp,tensor,sequence), got {sizes}")
    try:
        return sharding.make_mesh(sharding.MeshConfig(*sizes))
    except ValueError as e:
        raise EvalError(str(e)) from None


def _judge(args):
    if not args.judge_url and not args.judge_model:
        return None
    if not (args.judge_url and args.judge_model):
        raise EvalError("--judge_url and --judge_model go together")
    from qwenlong_jax.rewards import JudgeConfig, OpenAIJudge
    env = args.judge_api_key_env or None
    if env and env not in os.environ:
        raise EvalError(f"--judge_api_key_env: ${env} is not set; export it, or pass "
                        "--judge_api_key_env '' for an endpoint that needs no key")
    try:
        return OpenAIJudge(JudgeConfig(url=args.judge_url, model=args.judge_model, api_key_env=env or "",
                                       timeout_s=60.0, max_concurrency=16))
    except ValueError as e:
        raise EvalError(f"judge: {e}") from None


def _drop_stale_run_config(out: str) -> None:
    """A run_config.json with no prediction written (a run that failed before predicting) does
    not pin the settings: a rerun with corrected flags is not refused."""
    pred = os.path.join(out, "predictions")
    has_preds = os.path.isdir(pred) and any(os.path.getsize(os.path.join(pred, f)) > 0 for f in os.listdir(pred))
    cfg = os.path.join(out, "run_config.json")
    if os.path.exists(cfg) and not has_preds:
        os.remove(cfg)


def _localize(args) -> None:
    """Object-store inputs (qwenlong_jax/paths/): the checkpoint, --data_dir and --bench_file files are
    read from local copies. --out must be local (predictions are appended as they come)."""
    if paths.is_remote(args.out):
        raise EvalError(f"--out {args.out}: must be a local directory (predictions are appended as they "
                        "are made); copy it to the store afterwards")
    try:
        if paths.is_remote(args.checkpoint):
            args.checkpoint = paths.local_copy(args.checkpoint)
        if args.data_dir and paths.is_remote(args.data_dir):
            args.data_dir = paths.local_copy(args.data_dir)
        args.bench_file = [f"{n}={paths.local_copy(p)}" if sep and paths.is_remote(p) else f"{n}{sep}{p}"
                           for n, sep, p in (item.partition("=") for item in args.bench_file)]
    except paths.PathError as e:
        raise EvalError(str(e)) from None


def check_args(args) -> None:
    """Flag values and local paths that cannot work, as one EvalError, before anything loads
    (generate's and train's checks: numbers in range and finite, paths readable and of the
    right kind, a sweep whose generation cannot fit in memory refused with the figure). The
    checkpoint is checked where it is loaded (runner.load_model), after the benchmark files."""
    checks = [("--max_new_tokens", args.max_new_tokens, args.max_new_tokens >= 1, ">= 1"),
              ("--num_samples", args.num_samples, args.num_samples >= 1, ">= 1"),
              ("--temperature", args.temperature, 0 <= args.temperature < math.inf, "a finite number >= 0"),
              ("--top_p", args.top_p, 0 < args.top_p <= 1, "in (0, 1]"),
              ("--top_k", args.top_k, args.top_k >= 0, ">= 0"),
              ("--batch_size", args.batch_size, args.batch_size >= 1, ">= 1"),
              ("--max_input_tokens", args.max_input_tokens, args.max_input_tokens >= 1, ">= 1"),
              ("--limit", args.limit, args.limit is None or args.limit >= 1, ">= 1"),
              ("--per_length", args.per_length, args.per_length >= 1, ">= 1"),
              ("--lengths", args.lengths, bool(args.lengths) and min(args.lengths) >= 1,
               "one or more lengths, each >= 1")]
    for flag, value, ok, want in checks:
        if not ok:
            raise EvalError(f"{flag} must be {want}, got {value}")
    try:
        for flag, value, want in (("--tokenizer", args.tokenizer, "any"), ("--data_dir", args.data_dir, "dir")):
            if value:
                paths.check_readable(value, flag, want)
        for item in args.bench_file:
            name, sep, path = item.partition("=")
            if sep:
                paths.check_readable(path, f"--bench_file {name}", "file")
        if not paths.is_remote(args.out) and os.path.exists(args.out) and not os.path.isdir(args.out):
            raise paths.PathError(f"--out {args.out!r} is a file, not a directory")
    except paths.PathError as e:
        raise EvalError(str(e)) from None
    if args.sweep:
        _check_sweep_fits(args)


def _check_sweep_fits(args) -> None:
    """The sweep's longest length, generated --batch_size prompts at a time, must fit in the
    device's memory (on CPU, the host's): memory_terms.sample_memory, as the trainer's planner."""
    from qwenlong_jax import models
    from qwenlong_jax.capacity import planner
    from qwenlong_jax.capacity.memory_terms import MeshSizes, sample_memory
    from qwenlong_jax.sampling import sampler
    from qwenlong_jax.run.step_shapes import PREFILL_CHUNK

    limit = planner.device_memory_bytes()
    try:
        cfg = models.read_hf_config(args.checkpoint)
    except (ValueError, OSError):
        return  # load_model reports the checkpoint's problem in its own line
    L = max(args.lengths)
    S = sampler.bucket_length(L + planner.PROMPT_OVERHEAD, PREFILL_CHUNK)
    kv, work = sample_memory(cfg, MeshSizes(1, 1, 1, 1), args.batch_size, args.num_samples, S, args.max_new_tokens)
    need = cfg.num_params * (2 if args.dtype == "bfloat16" else 4) + kv + work
    if limit and need > limit:
        raise EvalError(f"--lengths {L}: generating {args.batch_size} x {args.num_samples} x {args.max_new_tokens} "
                        f"tokens needs ~{need / 2**30:.1f} GiB, {limit / 2**30:.1f} GiB available; lower "
                        "--lengths, --max_new_tokens or --batch_size")


def run(args, generate_fn=None) -> dict:
    """Everything main does, raising EvalError for user-fixable problems."""
    _localize(args)
    check_args(args)
    sampling = _sampling(args)
    bad_k = [k for k in args.pass_k if not 1 <= k <= args.num_samples]
    if bad_k:
        raise EvalError(f"--pass_k {bad_k} must be within 1..--num_samples={args.num_samples}")
    name = args.model_name or os.path.basename(os.path.normpath(args.checkpoint))
    if args.sweep and args.benchmarks is not None:
        raise EvalError("--sweep and --benchmarks are separate runs; give one of them")
    if args.sweep:
        os.makedirs(args.out, exist_ok=True)
        mesh = _mesh(args.mesh)
        model = runner.load_model(args.checkpoint, args.tokenizer or None, args.dtype, mesh)
        from qwenlong_jax.eval import sweep
        result = sweep.run_sweep(model, args.lengths, args.per_length, args.out, sampling=sampling,
                                 batch_size=args.batch_size, seed=args.sweep_seed,
                                 generate_fn=generate_fn, mesh=mesh,
                                 progress=not args.no_progress, model_name=name)
        print(sweep.sweep_table(result))
        return result
    names = [b.strip() for b in (args.benchmarks or ",".join(PAPER_BENCHMARKS)).split(",")
             if b.strip()]
    files = _bench_files(args)
    # Every file is read before the model loads, so a bad file fails in seconds.
    records = {b: bench_lib.load_benchmark(b, data_dir=args.data_dir, path=files.get(b),
                                           limit=args.limit) for b in names}
    extra = report.read_extra_rows(args.extra_rows) if args.extra_rows else []
    settings = {"checkpoint": os.path.abspath(args.checkpoint),
                "max_input_tokens": args.max_input_tokens,
                "max_new_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p,
                "top_k": sampling.top_k, "num_samples": sampling.num_samples,
                "seed": sampling.seed, "judge_model": args.judge_model or None}
    judge, mesh = _judge(args), _mesh(args.mesh)  # flag errors before anything is written
    _drop_stale_run_config(args.out)
    runner.check_run_config(args.out, settings)
    model = runner.load_model(args.checkpoint, args.tokenizer or None, args.dtype, mesh)
    summary = {}
    for b, recs in records.items():
        rows = runner.run_records(model, recs, sampling, max_input_tokens=args.max_input_tokens,
                                  batch_size=args.batch_size,
                                  pred_path=os.path.join(args.out, "predictions", f"{b}.jsonl"),
                                  judge=judge, generate_fn=generate_fn, mesh=mesh,
                                  progress=not args.no_progress, benchmark=b)
        summary[b] = metrics.summarize(rows, args.pass_k)
    meta = {"settings": settings}
    if judge is not None:
        meta["judge_stats"] = judge.stats()
    paths = report.write_reports(args.out, name, summary, extra, meta)
    with open(paths["table"]) as f:
        print(f.read())
    return summary


def main(argv=None, generate_fn=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args, generate_fn)
    except EvalError as e:
        raise SystemExit(f"evaluate: error: {e}") from None


if __name__ == "__main__":
    main()
