"""`python -m qwenlong_jax.evaluate`: the command line is qwenlong_jax/cli/evaluate.py."""

from qwenlong_jax.cli import evaluate, flags

if __name__ == "__main__":
    flags.run(evaluate.main)
