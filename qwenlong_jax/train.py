"""`python -m qwenlong_jax.train`: the command line is qwenlong_jax/cli/train.py."""

from qwenlong_jax.cli import flags, train

if __name__ == "__main__":
    flags.run(train.main, absl_app=True)
