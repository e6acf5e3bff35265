"""Evaluate a checkpoint on the paper's long-document QA benchmarks, or run the synthetic sweep.

    python -m qwenlong_jax.evaluate --checkpoint DIR --data_dir D --out OUT \\
        --benchmarks docmath,frames,2wikimqa,hotpotqa,musique,narrativeqa,qasper,ours
    python -m qwenlong_jax.evaluate --checkpoint DIR --out OUT --sweep \\
        --lengths 1024,2048,4096,8192,16384 --per_length 16

Benchmark files are `{data_dir}/{name}.jsonl` (override one with `--bench_file name=PATH`);
formats in qwenlong_jax/eval/benchmarks.py. Defaults follow docs/recipe.md "Evaluation": one
sample at temperature 0.7, top-p 0.95, up to 10,000 new tokens, inputs middle-truncated to
120,000 tokens, score max(rule, judge) (the judge only with --judge_url/--judge_model).
`--greedy` decodes greedily instead. OUT gets predictions/{benchmark}.jsonl (one line per (id,
sample); a rerun skips the ids already there), summary.json, table.md (paper layout, with the
paper's reported averages unless --extra_rows '') and scores.png. The sweep writes
sweep.json/.md/.png (qwenlong_jax/eval/evaluation.py).

Errors a user can fix (missing or malformed benchmark file, bad checkpoint, settings that differ
from the predictions already in OUT) end the program with one `error:` line, no traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags as absl_flags

from qwenlong_jax.cli import flags, int_list_flag
from qwenlong_jax.eval import benchmarks as bench_lib, evaluation
from qwenlong_jax.eval.benchmarks import EvalError
from qwenlong_jax.eval.request import EvalRequest


def parse_args(argv: Sequence[str] | None = None) -> EvalRequest:
    """The command line as an EvalRequest (defaults: EvalRequest's); FlagError, one line."""
    cmd = flags.Command(__name__, __doc__, argv)
    d, fv = EvalRequest, cmd.fv
    absl_flags.DEFINE_string("checkpoint", None, "HF model dir or one our trainer wrote", flag_values=fv)
    absl_flags.DEFINE_string("tokenizer", d.tokenizer, "tokenizer path ('' = the checkpoint's)", flag_values=fv)
    absl_flags.DEFINE_enum("dtype", d.dtype, ["float32", "bfloat16"], "parameter dtype", flag_values=fv)
    absl_flags.DEFINE_string("model_name", d.model_name, "table row name ('' = checkpoint dir name)", flag_values=fv)
    absl_flags.DEFINE_string("out", None, "output directory (local)", flag_values=fv)
    absl_flags.DEFINE_string(
        "benchmarks",
        d.benchmarks,
        f"comma list of {','.join(bench_lib.BENCHMARKS)} (default: the paper's seven)",
        flag_values=fv,
    )
    absl_flags.DEFINE_string("data_dir", d.data_dir, "directory of {name}.jsonl benchmark files", flag_values=fv)
    absl_flags.DEFINE_multi_string(
        "bench_file", list(d.bench_file), "NAME=PATH: the file of one benchmark (repeatable)", flag_values=fv
    )
    absl_flags.DEFINE_integer("limit", d.limit, "first N examples per benchmark", flag_values=fv)
    absl_flags.DEFINE_integer(
        "max_input_tokens", d.max_input_tokens, "prompts middle-truncated to this", flag_values=fv
    )
    absl_flags.DEFINE_integer("max_new_tokens", d.max_new_tokens, "tokens generated at most", flag_values=fv)
    absl_flags.DEFINE_float("temperature", d.temperature, "sampling temperature", flag_values=fv)
    absl_flags.DEFINE_float("top_p", d.top_p, "nucleus sampling mass", flag_values=fv)
    absl_flags.DEFINE_integer("top_k", d.top_k, "top-k sampling (0 = off)", flag_values=fv)
    absl_flags.DEFINE_boolean("greedy", d.greedy, "temperature 0 (overrides the above)", flag_values=fv)
    absl_flags.DEFINE_integer("num_samples", d.num_samples, "samples per example", flag_values=fv)
    int_list_flag.DEFINE_integers("pass_k", list(d.pass_k), "comma list of k for pass@k", flag_values=fv)
    absl_flags.DEFINE_integer("seed", d.seed, "sampling seed", flag_values=fv)
    absl_flags.DEFINE_integer("batch_size", d.batch_size, "prompts per sampler call", flag_values=fv)
    int_list_flag.DEFINE_integers(
        "mesh", d.mesh, "data,fsdp,tensor,sequence sizes (one may be -1), e.g. --mesh=-1,1,1,1", flag_values=fv
    )
    absl_flags.DEFINE_string("judge_url", d.judge_url, "OpenAI-compatible base URL incl. /v1", flag_values=fv)
    absl_flags.DEFINE_string("judge_model", d.judge_model, "the judge's model name", flag_values=fv)
    absl_flags.DEFINE_string(
        "judge_api_key_env",
        d.judge_api_key_env,
        "NAME of the env var with the key, as train's judge.api_key_env ('' = no key)",
        flag_values=fv,
    )
    absl_flags.DEFINE_string(
        "extra_rows",
        d.extra_rows,
        "JSON/CSV rows added to the table ('paper' = paper_table4.json, '' = none)",
        flag_values=fv,
    )
    absl_flags.DEFINE_boolean("no_progress", d.no_progress, "no progress bar", flag_values=fv)
    absl_flags.DEFINE_boolean("sweep", d.sweep, "run the synthetic length sweep", flag_values=fv)
    int_list_flag.DEFINE_integers("lengths", list(d.lengths), "sweep: document lengths in tokens", flag_values=fv)
    absl_flags.DEFINE_integer("per_length", d.per_length, "sweep: examples per length", flag_values=fv)
    absl_flags.DEFINE_integer("sweep_seed", d.sweep_seed, "sweep: the examples' seed", flag_values=fv)
    args = vars(cmd.parse(required=("checkpoint", "out")))
    tuples = {k: tuple(args[k]) for k in ("bench_file", "pass_k", "lengths", "mesh") if args[k] is not None}
    return EvalRequest(**{**args, **tuples})


def main(argv: Sequence[str] | None = None, generate_fn=None) -> dict:
    try:
        return evaluation.run(parse_args(argv), generate_fn)
    except (flags.FlagError, EvalError) as e:
        flags.fail(e)
