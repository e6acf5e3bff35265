"""Per-chip cost of one run of a compiled program: its HLO walked with loops multiplied out.

    cost = analyze(compiled.as_text())    # Cost(flops, hbm_bytes, collective_bytes, assumed)
    top(compiled.as_text(), n=20)         # the instructions that cost the most over the run

XLA's `cost_analysis()` counts a while loop's body once, so for a program whose time is in its
loops (the layer scan, micro-batches, decode steps) it says nothing about time. Here the
optimized HLO text is walked instead, and every loop body is multiplied by its trip count
(capacity/trip_count.py; a guessed one is listed in `Cost.assumed`, so the estimate says what it
guessed). Each other instruction costs what capacity/op_cost.py says; calls are followed; a
conditional costs its most expensive branch.
"""

from __future__ import annotations

import functools
import re

from qwenlong_jax.capacity.cost import Cost
from qwenlong_jax.capacity.hlo import Computation, Instr, attr, called, parse_module
from qwenlong_jax.capacity.op_cost import OpCosts
from qwenlong_jax.capacity.trip_count import TripCounter, UnknownTrip, triangular


class _Walker:
    def __init__(self, comps: dict[str, Computation], unknown_trip: UnknownTrip):
        self.comps = comps
        self.trips = TripCounter(comps, unknown_trip)
        self.ops = OpCosts(comps)
        self.walk = functools.cache(self._walk)  # a computation run in several places is walked once

    def _loop(self, ins: Instr, comp: Computation, frames: tuple):
        """(trip count, frames inside the loop, note when guessed) of a while instruction."""
        trip, counter, note = self.trips.trip_count(ins, comp, frames)
        init = comp.instrs.get(ins.operands[0]) if ins.operands else None
        src = (
            comp.instrs.get(init.operands[counter])
            if init is not None and init.opcode == "tuple" and 0 <= counter < len(init.operands)
            else None
        )
        start = (self.trips.mean_value(comp.name, src.name, ()) if src is not None else None) or 0
        return trip, frames + ((comp.name, ins.name, max(int(trip), 1), start, counter),), note

    @staticmethod
    def _branches(ins: Instr) -> list[str]:
        return called(ins.attrs, "branch_computations") or (
            called(ins.attrs, "true_computation") + called(ins.attrs, "false_computation")
        )

    def _walk(self, name: str, frames: tuple) -> Cost:
        """Cost of one run of computation `name`; frames: the enclosing loops, outermost first,
        as (computation holding the while, while name, trip count, counter start, counter
        index)."""
        comp = self.comps[name]
        total = Cost()
        for ins in comp.instrs.values():
            op = ins.opcode
            if op == "while":
                trip, inner, note = self._loop(ins, comp, frames)
                body = self.walk(attr(ins.attrs, "body"), inner)
                cond = self.walk(attr(ins.attrs, "condition"), inner)
                total += (body + cond).scaled(trip)
                if note:
                    total.assumed.append(note)
            elif op in ("call", "async-start"):
                for c in called(ins.attrs, "to_apply") + called(ins.attrs, "calls"):
                    total += self.walk(c, frames)
            elif op == "conditional":
                costs = [self.walk(b, frames) for b in self._branches(ins)]
                if costs:
                    total += max(costs, key=lambda c: (c.hbm_bytes, c.flops))
            else:
                total += self.ops.instr_cost(ins, comp)
        return total

    def records(self, name: str, frames: tuple, mult: float, out: list) -> None:
        """(cost x executions, executions, computation, instruction) of every costed
        instruction under `name` (a conditional's branches all listed, each as if taken)."""
        comp = self.comps[name]
        for ins in comp.instrs.values():
            if ins.opcode == "while":
                trip, inner, _ = self._loop(ins, comp, frames)
                for c in (attr(ins.attrs, "body") or "", attr(ins.attrs, "condition") or ""):
                    self.records(c, inner, mult * trip, out)
            elif ins.opcode in ("call", "async-start", "conditional"):
                for c in (
                    called(ins.attrs, "to_apply")
                    + called(ins.attrs, "calls")
                    + (self._branches(ins) if ins.opcode == "conditional" else [])
                ):
                    self.records(c, frames, mult, out)
            else:
                cost = self.ops.instr_cost(ins, comp)
                if cost.flops or cost.hbm_bytes or cost.collective_bytes:
                    out.append((cost.scaled(mult), mult, name, ins))


def analyze(hlo_text: str, unknown_trip: UnknownTrip = triangular) -> Cost:
    """Per-chip FLOPs, HBM bytes and collective bytes of one run of the program."""
    comps, entry = parse_module(hlo_text)
    return _Walker(comps, unknown_trip).walk(entry, ())


def top(hlo_text: str, n: int = 20, key: str = "hbm_bytes") -> list[tuple]:
    """The n instructions with the most `key` (hbm_bytes, flops, collective_bytes) over the
    whole run: (Cost summed over executions, executions, computation, opcode, op_name)."""
    comps, entry = parse_module(hlo_text)
    recs: list = []
    _Walker(comps, triangular).records(entry, (), 1.0, recs)
    recs.sort(key=lambda r: -getattr(r[0], key))
    out = []
    for cost, mult, comp, ins in recs[:n]:
        m = re.search(r'op_name="([^"]*)"', ins.attrs)
        out.append((cost, mult, comp, ins.opcode, m.group(1) if m else ins.name))
    return out
