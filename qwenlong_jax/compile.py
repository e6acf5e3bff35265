"""`python -m qwenlong_jax.compile`: the command line is qwenlong_jax/cli/compile.py."""

from qwenlong_jax.cli import compile, flags

if __name__ == "__main__":
    flags.run(compile.main)
