"""Dispatch `python -m qwenlong_jax.bench NAME [flags]` to qwenlong_jax.bench.NAME.main."""
import importlib
import sys

BENCHMARKS = ("attention", "rollout", "sampler", "train")


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in BENCHMARKS:
        sys.exit(f"usage: python -m qwenlong_jax.bench {{{','.join(BENCHMARKS)}}} [flags]")
    importlib.import_module(f"qwenlong_jax.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
