"""`python -m qwenlong_jax.pretrain`: the command line is qwenlong_jax/cli/pretrain.py."""

from qwenlong_jax.cli import flags, pretrain

if __name__ == "__main__":
    flags.run(pretrain.main)
