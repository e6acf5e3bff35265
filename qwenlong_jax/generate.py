"""`python -m qwenlong_jax.generate`: the command line is qwenlong_jax/cli/generate.py."""

from qwenlong_jax.cli import flags, generate

if __name__ == "__main__":
    flags.run(generate.main)
