"""The optimized HLO text of a compiled program, parsed into computations and instructions.

    comps, entry = parse_module(compiled.as_text())
    comps[entry].instrs["fusion.3"].type        # [Array(dtype, dims, vmem)], a tuple's arrays
    attr(ins.attrs, "condition")                 # an attribute's value ("%" stripped)

Only what the step-time model reads is kept: each instruction's name, result arrays (with the
memory space: S(1) is on-chip VMEM), opcode, operand names, the attribute text after the
operand list, and a constant's literal.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

_ITEM_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
}
_ARRAY = re.compile(r"([a-z][a-z0-9]*)\[([0-9,]*)\](\{[^}]*\})?")


@dataclasses.dataclass
class Array:
    dtype: str
    dims: tuple[int, ...]
    vmem: bool  # memory space S(1): on-chip, no HBM traffic

    @property
    def bytes(self) -> int:
        bits = {"s4": 4, "u4": 4}.get(self.dtype)
        n = math.prod(self.dims)
        if bits:
            return n * bits // 8
        item = _ITEM_BYTES.get(self.dtype)
        if item is None and self.dtype.startswith("f8"):
            item = 1
        return n * (item or 0)


def parse_type(text: str) -> list[Array]:
    """The arrays of an HLO type ("bf16[2,3]{1,0:T(8,128)S(1)}" or a tuple of them)."""
    out = []
    for m in _ARRAY.finditer(text):
        dims = tuple(int(d) for d in m.group(2).split(",") if d)
        out.append(Array(m.group(1), dims, bool(m.group(3) and "S(1)" in m.group(3))))
    return out


def hbm_bytes(arrays: Sequence[Array]) -> int:
    return sum(a.bytes for a in arrays if not a.vmem)


@dataclasses.dataclass
class Instr:
    name: str
    type: list[Array]
    opcode: str
    operands: list[str]
    attrs: str
    root: bool = False
    literal: str = ""  # a constant's value text


def _balanced(s: str, i: int) -> int:
    """Index just past the parenthesis group that opens at s[i]."""
    depth = 0
    for j in range(i, len(s)):
        c = s[j]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(s)


_INSTR = re.compile(r"\s*(ROOT\s+)?%([\w.\-]+)\s*=\s*")
_HEADER = re.compile(r"(ENTRY\s+)?%([\w.\-]+)\s*\(")


def _parse_instr(line: str) -> Instr | None:
    m = _INSTR.match(line)
    if not m:
        return None
    i = m.end()
    j = _balanced(line, i) if line[i] == "(" else line.index(" ", i)
    type_text = line[i:j]
    rest = line[j:].lstrip()
    om = re.match(r"([a-z][a-z0-9\-]*)\(", rest)
    if not om:
        return None
    k = _balanced(rest, om.end() - 1)
    operands = re.findall(r"%([\w.\-]+)", rest[om.end() : k - 1])
    return Instr(
        m.group(2),
        parse_type(type_text),
        om.group(1),
        operands,
        rest[k:],
        bool(m.group(1)),
        rest[om.end() : k - 1].strip(),
    )


@dataclasses.dataclass
class Computation:
    name: str
    instrs: dict[str, Instr]
    root: Instr | None
    params: dict[int, Instr]


def parse_module(text: str) -> tuple[dict[str, Computation], str]:
    """Computations by name and the entry computation's name."""
    comps: dict[str, Computation] = {}
    entry = ""
    cur: Computation | None = None
    for line in text.splitlines():
        if cur is None:
            m = _HEADER.match(line)
            if m and line.rstrip().endswith("{"):
                cur = Computation(m.group(2), {}, None, {})
                if m.group(1):
                    entry = cur.name
            continue
        if line.startswith("}"):
            comps[cur.name] = cur
            cur = None
            continue
        ins = _parse_instr(line)
        if ins is None:
            continue
        cur.instrs[ins.name] = ins
        if ins.root:
            cur.root = ins
        if ins.opcode == "parameter":
            pm = re.match(r"\s*(\d+)", line[line.index("parameter(") + len("parameter(") :])
            assert pm is not None, line  # XLA always writes parameter(N)
            cur.params[int(pm.group(1))] = ins
    if not entry:
        raise ValueError("no ENTRY computation in the HLO text")
    return comps, entry


def attr(attrs: str, key: str) -> str | None:
    m = re.search(rf"\b{key}=(%?[\w.\-]+)", attrs)
    return m.group(1).lstrip("%") if m else None


def called(attrs: str, key: str) -> list[str]:
    m = re.search(rf"\b{key}=\{{([^}}]*)\}}", attrs)
    if m:
        return [s.strip().lstrip("%") for s in m.group(1).split(",") if s.strip()]
    one = attr(attrs, key)
    return [one] if one else []


def int_literal(ins: Instr) -> int:
    try:
        return int(float(ins.literal))
    except ValueError:
        return 0
