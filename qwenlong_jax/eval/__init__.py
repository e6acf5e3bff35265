"""Evaluation: the paper's seven long-document QA benchmarks (plus our own JSONL) and a synthetic
context-length sweep. Command line: python -m qwenlong_jax.evaluate (qwenlong_jax/cli/evaluate.py).

    from qwenlong_jax.eval import benchmarks, generation, runner, report, sweep
    recs = benchmarks.load_benchmark("hotpotqa", data_dir=D)
    rows = runner.run_records(generation.load_model(ckpt), recs, generation.SamplingSettings(), ...)
    metrics.summarize(rows, pass_ks=(1,)); report.write_reports(out, name, summary, extra_rows)
    recs = sweep.sweep_records(tok, [256, 512], per_length=8)
    sweep.accuracy_by_length(cfg, params, tok, recs, max_new_tokens=64)

Modules: benchmarks (loaders, BenchmarkError), metrics (score/EM/F1/pass@k), generation (the model,
sampling settings, decoded responses), runner (batched, resumable generation + scoring), report
(summary JSON, markdown table, PNG), sweep, request (what one evaluation is asked to do, checked
before a model loads), evaluation (one evaluation: run).
jax is imported only when a model is loaded or the default sampler is used.
"""

from qwenlong_jax.eval.benchmarks import (  # noqa: F401
    BENCHMARKS,
    BenchmarkError,
    EvalError,
    gold_answers,
    load_benchmark,
)
