"""`python -m qwenlong_jax.plan`: the command line is qwenlong_jax/cli/plan.py."""

from qwenlong_jax.cli import flags, plan

if __name__ == "__main__":
    flags.run(plan.main)
