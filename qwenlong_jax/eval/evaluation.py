"""One evaluation of a checkpoint: the paper's long-document QA benchmarks, or the synthetic sweep
(the command line: qwenlong_jax/cli/evaluate.py).

    summary = run(EvalRequest(checkpoint=D, out=OUT, data_dir=DATA, benchmarks="docmath,frames"))
    result = run(EvalRequest(checkpoint=D, out=OUT, sweep=True, lengths=(1024, 2048)))

Benchmark files are `{data_dir}/{name}.jsonl` (or a `bench_file` NAME=PATH); formats in
benchmarks.py. Score max(rule, judge) (the judge only with judge_url/judge_model). OUT gets
predictions/{benchmark}.jsonl (one line per (id, sample); a rerun skips the ids already there),
summary.json, table.md (paper layout, with the paper's reported averages unless extra_rows '')
and scores.png; the sweep writes sweep.json/.md/.png. Problems a user can fix (a missing or
malformed benchmark file, a bad checkpoint, settings that differ from the predictions already in
OUT) raise EvalError, one line.
"""

from __future__ import annotations

import json
import os

from qwenlong_jax.eval import benchmarks as bench_lib, generation, metrics, report, runner
from qwenlong_jax.eval.benchmarks import EvalError
from qwenlong_jax.eval.report import PAPER_BENCHMARKS
from qwenlong_jax.eval.request import (
    EvalRequest,
    bench_files,
    check_request,
    localize,
    make_judge,
    make_mesh,
    sampling_settings,
)


def check_run_config(out_dir: str, config: dict) -> None:
    """Refuse to resume into `out_dir` with different generation settings (mixed predictions
    would be averaged together silently); write the config on a fresh run."""
    path = os.path.join(out_dir, "run_config.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        diff = sorted(k for k in config if k in old and old[k] != config[k])
        if diff:
            changes = ", ".join(f"{k}: {old[k]} -> {config[k]}" for k in diff)
            raise EvalError(
                f"{out_dir}: existing predictions were made with different settings ({changes}); use another --out"
            )
    os.makedirs(out_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def drop_stale_run_config(out: str) -> None:
    """A run_config.json with no prediction written (a run that failed before predicting) does
    not pin the settings: a rerun with corrected flags is not refused."""
    pred = os.path.join(out, "predictions")
    has_preds = os.path.isdir(pred) and any(os.path.getsize(os.path.join(pred, f)) > 0 for f in os.listdir(pred))
    cfg = os.path.join(out, "run_config.json")
    if os.path.exists(cfg) and not has_preds:
        os.remove(cfg)


def run(req: EvalRequest, generate_fn=None) -> dict:
    """The benchmarks' summary (or the sweep's result); prints the table. EvalError for
    user-fixable problems, raised before the model loads where it can be."""
    req = localize(req)
    check_request(req)
    sampling = sampling_settings(req)
    bad_k = [k for k in req.pass_k if not 1 <= k <= req.num_samples]
    if bad_k:
        raise EvalError(f"--pass_k {bad_k} must be within 1..--num_samples={req.num_samples}")
    name = req.model_name or os.path.basename(os.path.normpath(req.checkpoint))
    if req.sweep and req.benchmarks is not None:
        raise EvalError("--sweep and --benchmarks are separate runs; give one of them")
    if req.sweep:
        os.makedirs(req.out, exist_ok=True)
        mesh = make_mesh(req.mesh)
        model = generation.load_model(req.checkpoint, req.tokenizer or None, req.dtype, mesh)
        from qwenlong_jax.eval import sweep

        result = sweep.run_sweep(
            model,
            list(req.lengths),
            req.per_length,
            req.out,
            sampling=sampling,
            batch_size=req.batch_size,
            seed=req.sweep_seed,
            generate_fn=generate_fn,
            mesh=mesh,
            progress=not req.no_progress,
            model_name=name,
        )
        print(sweep.sweep_table(result))
        return result
    names = [b.strip() for b in (req.benchmarks or ",".join(PAPER_BENCHMARKS)).split(",") if b.strip()]
    files = bench_files(req)
    # Every file is read before the model loads, so a bad file fails in seconds.
    records = {b: bench_lib.load_benchmark(b, data_dir=req.data_dir, path=files.get(b), limit=req.limit) for b in names}
    extra = report.read_extra_rows(req.extra_rows) if req.extra_rows else []
    settings = {
        "checkpoint": os.path.abspath(req.checkpoint),
        "max_input_tokens": req.max_input_tokens,
        "max_new_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "num_samples": sampling.num_samples,
        "seed": sampling.seed,
        "judge_model": req.judge_model or None,
    }
    judge, mesh = make_judge(req), make_mesh(req.mesh)  # flag errors before anything is written
    drop_stale_run_config(req.out)
    check_run_config(req.out, settings)
    model = generation.load_model(req.checkpoint, req.tokenizer or None, req.dtype, mesh)
    summary = {}
    for b, recs in records.items():
        rows = runner.run_records(
            model,
            recs,
            sampling,
            max_input_tokens=req.max_input_tokens,
            batch_size=req.batch_size,
            pred_path=os.path.join(req.out, "predictions", f"{b}.jsonl"),
            judge=judge,
            generate_fn=generate_fn,
            mesh=mesh,
            progress=not req.no_progress,
            benchmark=b,
        )
        summary[b] = metrics.summarize(rows, list(req.pass_k))
    meta = {"settings": settings}
    if judge is not None:
        meta["judge_stats"] = judge.stats()
    written = report.write_reports(req.out, name, summary, extra, meta)
    with open(written["table"]) as f:
        print(f.read())
    return summary
