"""Every config field is read by the code that runs (an unread key is a knob that does nothing).

Static check over the package's source: each dataclass field of the run config must appear as
an attribute read (`x.<field>`, or `d.get("<field>")`) somewhere outside the config's own validators (`__post_init__`).
It cannot prove that a read changes behaviour (a common name may be read elsewhere); it does
fail on a field that nothing reads, which is how `rl.kl_coef`, `rl.epochs` and `log_every`
once went unnoticed (the last test shows it catches such a field).
"""

import ast
import dataclasses
import os

from qwenlong_jax import config as config_lib
from qwenlong_jax.parallel.sharding import MeshConfig

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "qwenlong_jax")
SECTIONS = (
    config_lib.Config,
    config_lib.ModelSection,
    MeshConfig,
    config_lib.OptimConfig,
    config_lib.RLConfig,
    config_lib.PhaseConfig,
    config_lib.DataConfig,
    config_lib.RetroConfig,
    config_lib.JudgeConfig,
)


class _Reads(ast.NodeVisitor):
    def __init__(self):
        self.names: set[str] = set()

    def visit_FunctionDef(self, node):
        if node.name != "__post_init__":  # validation is not use
            self.generic_visit(node)

    def visit_Call(self, node):  # d.get("order"): a field read from the ConfigDict itself
        if (
            isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            self.names.add(node.args[0].value)
        self.generic_visit(node)

    def visit_Attribute(self, node):
        if isinstance(node.ctx, ast.Load):
            self.names.add(node.attr)
        self.generic_visit(node)


def attribute_reads(root: str = PKG) -> set[str]:
    reads = _Reads()
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(d, f)) as fh:
                    reads.visit(ast.parse(fh.read()))
    return reads.names


def unread_fields(sections, reads: set[str]) -> list[str]:
    return [f"{cls.__name__}.{f.name}" for cls in sections for f in dataclasses.fields(cls) if f.name not in reads]


def test_every_config_field_is_read():
    assert unread_fields(SECTIONS, attribute_reads()) == []


def test_an_unread_field_fails():
    @dataclasses.dataclass(frozen=True)
    class WithDeadKnob:
        kl_coef: float = 0.0
        log_every_dead_knob: int = 1

    assert unread_fields((WithDeadKnob,), attribute_reads()) == ["WithDeadKnob.log_every_dead_knob"]
