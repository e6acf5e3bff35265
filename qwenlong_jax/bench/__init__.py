"""Benchmarks: `python -m qwenlong_jax.bench {attention,sampler,train}`.

Each benchmark is a module here with `main(argv: list[str]) -> None`; it prints a markdown
table and the exact command, and compares against a baseline measured in the same run.
"""
