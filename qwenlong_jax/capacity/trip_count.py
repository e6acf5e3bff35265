"""How many times a while loop runs, read from its condition (and the values it starts from).

The trip count comes from the loop condition `counter < constant` (the form the layer scan,
fori_loops and the decode loop's `step < R` take; the start value comes from the while's init
tuple; XLA's known_trip_count when the backend writes one). A loop whose bound is not a
constant (the prefill's causal block loop, whose bound is the outer chunk index) gets its mean
over the enclosing loops' iterations when the bound follows their counters, else
`unknown_trip` (default `triangular`: the mean of 0..T-1 for the longest enclosing loop of T
steps); either way a note says what was guessed.

`frames`: the enclosing loops, outermost first, as (computation holding the while, while name,
trip count, counter start, counter index).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from qwenlong_jax.capacity.hlo import Computation, Instr, attr, int_literal

UnknownTrip = Callable[[str, tuple[int, ...]], float]

_ARITH: dict[str, Callable[..., float]] = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b if b else 0.0,
    "maximum": max,
    "minimum": min,
    "clamp": lambda lo, x, hi: min(max(x, lo), hi),
    "and": lambda a, b: float(bool(a) and bool(b)),
    "or": lambda a, b: float(bool(a) or bool(b)),
    "not": lambda a: float(not a),
    "negate": lambda a: -a,
    "abs": abs,
    "shift-left": lambda a, b: a * 2**b,
    "shift-right-logical": lambda a, b: abs(a) / 2**b,
    "shift-right-arithmetic": lambda a, b: a / 2**b,
}


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "LT": lambda a, b: a < b,
    "LE": lambda a, b: a <= b,
    "GT": lambda a, b: a > b,
    "GE": lambda a, b: a >= b,
    "EQ": lambda a, b: a == b,
    "NE": lambda a, b: a != b,
}


def _eval_fused(fused: Computation, name: str, params: list) -> float | None:
    ins = fused.instrs.get(name)
    if ins is None:
        return None
    if ins.opcode == "parameter":
        i = next((k for k, p in fused.params.items() if p.name == name), None)
        return None if i is None or i >= len(params) else params[i]
    if ins.opcode == "constant":
        return float(int_literal(ins))
    if ins.opcode in ("convert", "bitcast", "copy", "reshape", "broadcast") and ins.operands:
        return _eval_fused(fused, ins.operands[0], params)
    if ins.opcode in _ARITH:
        vals = [_eval_fused(fused, o, params) for o in ins.operands]
        return None if any(v is None for v in vals) else _ARITH[ins.opcode](*vals)
    if ins.opcode == "compare" and len(ins.operands) == 2:
        a, b = (_eval_fused(fused, o, params) for o in ins.operands)
        d = attr(ins.attrs, "direction")
        return None if a is None or b is None or d not in _COMPARE else float(_COMPARE[d](a, b))
    if ins.opcode == "select" and len(ins.operands) == 3:
        p, a, b = (_eval_fused(fused, o, params) for o in ins.operands)
        if a is None or b is None:
            return None
        return (a + b) / 2 if p is None else (a if p else b)
    return None


def triangular(_name: str, outer: tuple[int, ...]) -> float:
    """Default guess for a loop whose bound is not a constant: a causal block loop, whose bound
    is the counter of an enclosing loop of T steps (taken as the longest enclosing loop), runs
    the mean of 0..T-1 times; 1 at the top level."""
    T = max(outer, default=1)
    return max((T - 1) / 2, 1.0)


class TripCounter:
    def __init__(self, comps: dict[str, Computation], unknown_trip: UnknownTrip):
        self.comps = comps
        self.unknown_trip = unknown_trip

    def _compares(self, cond: Computation):
        """(direction, lhs, rhs) of the condition's compares, operands as cond's instructions
        (a compare wrapped in a fusion, as XLA:CPU writes it, is looked through)."""
        for c in cond.instrs.values():
            if c.opcode == "compare":
                yield attr(c.attrs, "direction"), *(cond.instrs.get(o) for o in c.operands[:2])
            elif c.opcode == "fusion":
                fused = self.comps.get(attr(c.attrs, "calls") or "")
                if fused is None:
                    continue
                by_param = {p.name: i for i, p in fused.params.items()}
                for f in fused.instrs.values():
                    if f.opcode == "compare" and all(o in by_param for o in f.operands[:2]):
                        yield (
                            attr(f.attrs, "direction"),
                            *(cond.instrs.get(c.operands[by_param[o]]) for o in f.operands[:2]),
                        )

    def trip_count(self, ins: Instr, comp: Computation, frames: tuple) -> tuple[float, int, str | None]:
        """(trip count, counter's tuple index or -1, note when guessed) of a while loop."""
        known = re.search(r'"known_trip_count":\{"n":"(\d+)"', ins.attrs)
        trip, counter, note = self._trip_from_condition(ins, comp, frames)
        if known:
            return int(known.group(1)), counter, None
        return trip, counter, note

    def _trip_from_condition(self, ins: Instr, comp: Computation, frames: tuple):
        cond = self.comps[attr(ins.attrs, "condition") or ""]
        init = comp.instrs.get(ins.operands[0]) if ins.operands else None

        def init_of(idx):
            if init is not None and init.opcode == "tuple" and idx < len(init.operands):
                return comp.instrs.get(init.operands[idx])
            return None

        dynamic = None
        for d, a, b in self._compares(cond):
            if a is None or b is None:
                continue
            if d in ("GT", "GE"):
                a, b = b, a
                d = {"GT": "LT", "GE": "LE"}[d]
            if d not in ("LT", "LE") or a.opcode != "get-tuple-element":
                continue
            idx = int(attr(a.attrs, "index") or 0)
            src = init_of(idx)
            start = (self.mean_value(comp.name, src.name, ()) if src is not None else None) or 0
            if b.opcode == "constant":
                return max(int(int_literal(b) - start) + (d == "LE"), 0), idx, None
            if b.opcode == "get-tuple-element" and dynamic is None:
                bound = init_of(int(attr(b.attrs, "index") or 0))
                mean = None if bound is None else self.mean_value(comp.name, bound.name, frames)
                if mean is not None:
                    dynamic = (max(mean - start + (d == "LE"), 0.0), idx)
        if dynamic is not None:
            return (
                dynamic[0],
                dynamic[1],
                (f"{ins.name}: bound follows an outer loop's counter, mean {dynamic[0]:.4g} trips"),
            )
        trip = self.unknown_trip(ins.name, tuple(f[2] for f in frames))
        return trip, -1, f"{ins.name}: trip count not a constant, assumed {trip:g}"

    def mean_value(self, comp_name: str, name: str, frames: tuple, depth: int = 0) -> float | None:
        """The mean, over the enclosing loops' iterations, of an integer scalar computed from
        loop counters and constants (+ - * / max min, fusions of those); None if it is not."""
        comp = self.comps[comp_name]
        ins = comp.instrs.get(name)
        if ins is None or depth > 64:
            return None
        op = ins.opcode
        if op == "constant":
            return float(int_literal(ins))
        if op in ("convert", "bitcast", "copy", "reshape", "broadcast") and ins.operands:
            return self.mean_value(comp_name, ins.operands[0], frames, depth + 1)
        if op in _ARITH:
            vals = [self.mean_value(comp_name, o, frames, depth + 1) for o in ins.operands]
            return None if any(v is None for v in vals) else _ARITH[op](*vals)
        if op == "compare" and len(ins.operands) == 2:  # evaluated at the means
            a, b = (self.mean_value(comp_name, o, frames, depth + 1) for o in ins.operands)
            d = attr(ins.attrs, "direction")
            return None if a is None or b is None or d not in _COMPARE else float(_COMPARE[d](a, b))
        if op == "select" and len(ins.operands) == 3:  # e.g. floor division's sign fix-up
            p, a, b = (self.mean_value(comp_name, o, frames, depth + 1) for o in ins.operands)
            if a is None or b is None:
                return None
            return (a + b) / 2 if p is None else (a if p else b)
        if op == "fusion":
            fused = self.comps.get(attr(ins.attrs, "calls") or "")
            if fused is None or fused.root is None:
                return None
            vals = [self.mean_value(comp_name, o, frames, depth + 1) for o in ins.operands]
            return _eval_fused(fused, fused.root.name, vals)
        if op == "get-tuple-element" and frames:
            src = comp.instrs.get(ins.operands[0]) if ins.operands else None
            outer_comp, while_name, trip, start, counter = frames[-1]
            if src is None or src.opcode != "parameter":
                return None
            idx = int(attr(ins.attrs, "index") or 0)
            if idx == counter:
                return start + (trip - 1) / 2
            w = self.comps[outer_comp].instrs[while_name]
            body = self.comps[attr(w.attrs, "body") or ""]
            root = body.root
            passes = (
                root is not None
                and root.opcode == "tuple"
                and idx < len(root.operands)
                and body.instrs[root.operands[idx]].opcode == "get-tuple-element"
                and int(attr(body.instrs[root.operands[idx]].attrs, "index") or -1) == idx
            )
            init = self.comps[outer_comp].instrs.get(w.operands[0])
            if not passes or init is None or init.opcode != "tuple":
                return None  # changes from step to step in a way not followed here
            return self.mean_value(outer_comp, init.operands[idx], frames[:-1], depth + 1)
        return None
