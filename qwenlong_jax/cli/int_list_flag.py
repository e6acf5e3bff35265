"""A flag of comma-separated integers (`--lengths 1024,2048`), for the commands' FlagValues."""

from __future__ import annotations

import sys

from absl import flags


class IntListParser(flags.ArgumentParser):
    """Comma-separated integers ("1024,2048"; "" = none)."""

    syntactic_help = "comma-separated integers"

    def parse(self, argument):
        if isinstance(argument, (list, tuple)):
            return [int(x) for x in argument]
        try:
            return [int(x) for x in str(argument).split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"expected comma-separated integers, got {argument!r}") from None

    def flag_type(self):
        return "list of integers"


def DEFINE_integers(name: str, default, help: str, flag_values: flags.FlagValues) -> flags.FlagHolder:  # noqa: N802
    """A flag of comma-separated integers (`--lengths 1024,2048`), the caller's flag."""
    return flags.DEFINE(
        IntListParser(),
        name,
        default,
        help,
        flag_values,
        flags.CsvListSerializer(","),
        module_name=sys._getframe(1).f_globals["__name__"],
    )
