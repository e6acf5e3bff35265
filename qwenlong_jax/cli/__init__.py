"""The command lines, one module per command: flag definitions, parsing, the call into the
library and what the command prints. `python -m qwenlong_jax.X` runs `qwenlong_jax.cli.X.main`
through a shim of a few lines at the package root; `main(argv)` also runs in-process. flags.py
is the style they share: absl flags, `--config` via ml_collections' config_flags, `--help` and
`--helpfull`, one `error:` line.

Commands: train, plan, compile, evaluate, generate, ablation, pretrain, make_synthetic,
train_tokenizer, bench.
"""
