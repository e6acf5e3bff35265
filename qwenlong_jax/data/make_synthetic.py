"""`python -m qwenlong_jax.data.make_synthetic`: the command line is qwenlong_jax/cli/make_synthetic.py."""

from qwenlong_jax.cli import flags, make_synthetic

if __name__ == "__main__":
    flags.run(make_synthetic.main)
