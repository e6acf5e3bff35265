"""`python -m qwenlong_jax.ablation`: the command line is qwenlong_jax/cli/ablation.py."""

from qwenlong_jax.cli import ablation, flags

if __name__ == "__main__":
    flags.run(ablation.main)
