"""`python -m qwenlong_jax.bench NAME [flags]`: the command line is qwenlong_jax/cli/bench.py."""

from qwenlong_jax.cli import bench, flags

if __name__ == "__main__":
    flags.run(bench.main)
