"""Benchmarks: `python -m qwenlong_jax.bench {attention,kernels,rollout,sampler,train}`.

Each benchmark is a module here with `run(args, argv) -> ...` (its flags are defined and parsed
by qwenlong_jax/cli/bench.py); it prints a markdown table and the exact command, and compares
against a baseline measured in the same run.
"""
