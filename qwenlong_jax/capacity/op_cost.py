"""Cost of one execution of one HLO instruction (loops and calls are capacity/hlo_cost.py's).

FLOPs       every dot and convolution (capacity/flops.py), inside fusions too.
HBM bytes   every top-level instruction (a fusion is one) reads its operands and writes its
            result, except: arrays in memory space S(1) (on-chip VMEM after XLA's memory
            space assignment) are free, a dynamic-slice reads only its slice, a
            dynamic-update-slice (also as a fusion's root, in place) writes only its update and
            does not read the buffer it updates, bitcasts/tuples/parameters are free.
collective  bytes each chip sends: all-gather its result, reduce-scatter and all-to-all and
            collective-permute their operand, all-reduce twice its operand (reduce-scatter +
            all-gather).
"""

from __future__ import annotations

import functools

from qwenlong_jax.capacity.cost import Cost
from qwenlong_jax.capacity.flops import conv_flops, dot_flops
from qwenlong_jax.capacity.hlo import Computation, Instr, attr, hbm_bytes

_FREE = {
    "parameter",
    "constant",
    "get-tuple-element",
    "tuple",
    "bitcast",
    "after-all",
    "partition-id",
    "replica-id",
    "opt-barrier",
    "iota",
    "copy-done",
    "all-gather-done",
    "all-reduce-done",
    "collective-permute-done",
    "send-done",
    "recv-done",
    "slice-done",
    "async-done",
    "async-update",
    "add-dependency",
}
_COLLECTIVES = {
    "all-gather": "out",
    "all-gather-start": "out",
    "reduce-scatter": "in",
    "all-to-all": "in",
    "collective-permute": "in",
    "collective-permute-start": "in",
    "all-reduce": "in2",
    "all-reduce-start": "in2",
}


class OpCosts:
    """Per-instruction costs over the computations of one module (fusions looked into)."""

    def __init__(self, comps: dict[str, Computation]):
        self.comps = comps
        # Per-instance caches: a fused computation is costed once however often it is called.
        self.fused_flops = functools.cache(self._fused_flops)
        self._sliced_read = functools.cache(self._sliced_read_once)

    def instr_cost(self, ins: Instr, comp: Computation) -> Cost:
        """Cost of one execution of a non-control instruction."""
        op = ins.opcode
        total = Cost()
        if op in _FREE:
            return total
        operands = [comp.instrs[o] for o in ins.operands if o in comp.instrs]
        if op == "fusion":
            total.flops += self.fused_flops(attr(ins.attrs, "calls"))
            total.hbm_bytes += self.fusion_bytes(ins, comp)
            return total
        if op in ("dynamic-slice", "slice"):
            total.hbm_bytes += 2 * hbm_bytes(ins.type)
            return total
        if op == "dynamic-update-slice":
            total.hbm_bytes += 2 * (hbm_bytes(operands[1].type) if len(operands) > 1 else 0)
            return total
        if op == "scatter":  # in place: reads the indices and updates, writes the updates
            upd = operands[len(operands) // 2 + 1 :] if len(operands) >= 3 else []
            total.hbm_bytes += sum(2 * hbm_bytes(o.type) for o in upd) + (
                hbm_bytes(operands[len(operands) // 2].type) if len(operands) >= 3 else 0
            )
            return total
        if op in ("convolution", "dot"):
            total.flops += conv_flops(ins, comp) if op == "convolution" else dot_flops(ins, comp)
        if op in _COLLECTIVES:
            kind = _COLLECTIVES[op]
            arrays = ins.type if kind == "out" else [a for o in operands for a in o.type]
            if op.endswith("-start") and kind == "out":  # (operands, result) tuple
                arrays = ins.type[len(arrays) // 2 :] if len(ins.type) > 1 else ins.type
            n = sum(a.bytes for a in arrays)
            total.collective_bytes += 2 * n if kind == "in2" else n
        total.hbm_bytes += hbm_bytes(ins.type) + sum(hbm_bytes(o.type) for o in operands)
        return total

    def _fused_flops(self, name: str | None) -> float:
        comp = self.comps.get(name or "")
        if comp is None:
            return 0.0
        f = 0.0
        for ins in comp.instrs.values():
            if ins.opcode == "convolution":
                f += conv_flops(ins, comp)
            elif ins.opcode == "dot":
                f += dot_flops(ins, comp)
            elif ins.opcode == "fusion":
                f += self.fused_flops(attr(ins.attrs, "calls"))
        return f

    def fusion_bytes(self, ins: Instr, comp: Computation) -> int:
        fused = self.comps.get(attr(ins.attrs, "calls") or "")
        if fused is None:
            return hbm_bytes(ins.type) + sum(hbm_bytes(comp.instrs[o].type) for o in ins.operands if o in comp.instrs)
        in_place: set[str] = set()

        def through_bitcast(name: str) -> str:
            f = fused.instrs.get(name)
            while f is not None and f.opcode == "bitcast" and f.operands:
                name = f.operands[0]
                f = fused.instrs.get(name)
            return name

        out_bytes = 0
        roots = [fused.root] if fused.root is not None else []
        if roots and roots[0].opcode == "tuple":
            roots = [fused.instrs[o] for o in roots[0].operands if o in fused.instrs]
        # A tuple root writes one array per element; a single root writes the whole result.
        root_types = [[a] for a in ins.type] if len(roots) > 1 else [ins.type] * len(roots)
        for r, arrs in zip(roots, root_types):
            if r.opcode == "dynamic-update-slice":
                in_place.add(through_bitcast(r.operands[0]))
                upd = fused.instrs.get(r.operands[1])
                out_bytes += 0 if all(a.vmem for a in arrs) else (sum(a.bytes for a in upd.type) if upd else 0)
            else:
                out_bytes += hbm_bytes(arrs)
        in_bytes = 0
        for i, o in enumerate(ins.operands):
            src = comp.instrs.get(o)
            p = fused.params.get(i)
            if src is None or p is None or p.name in in_place:
                continue
            if all(a.vmem for a in src.type):
                continue
            sliced = self._sliced_read(fused.name, i)
            in_bytes += hbm_bytes(src.type) if sliced is None else sliced
        return in_bytes + out_bytes

    def _sliced_read_once(self, fused_name: str, index: int) -> int | None:
        """Bytes a fused computation reads of its parameter `index` when it only slices it
        (dynamic-slice / slice, through bitcasts and nested fusions); None when it reads it all."""
        fused = self.comps[fused_name]
        p = fused.params.get(index)
        if p is None:
            return None
        total, stack = 0, [p.name]
        while stack:
            name = stack.pop()
            for u in fused.instrs.values():
                if name not in u.operands:
                    continue
                if u.opcode == "bitcast":
                    stack.append(u.name)
                elif u.opcode in ("dynamic-slice", "slice") and u.operands[0] == name:
                    total += sum(a.bytes for a in u.type)
                elif u.opcode == "fusion" and (attr(u.attrs, "calls") or "") in self.comps:
                    inner = [
                        self._sliced_read(attr(u.attrs, "calls"), j) for j, o in enumerate(u.operands) if o == name
                    ]
                    if any(x is None for x in inner):
                        return None
                    total += sum(x or 0 for x in inner)
                else:
                    return None
        return total
