"""Experiments over many training runs: the paper's ablation in miniature and the headline (RL
after SFT vs SFT alone), each over seeds, with their statistics and verdicts.

Modules: ablation_runs (the ablation's runs and report), headline (the default run over seeds),
stats (arms, the gap test, the aggregate over seeds), claims (tables, claims, hard groups, the
plot). Command line: python -m qwenlong_jax.ablation (qwenlong_jax/cli/ablation.py).
"""
