"""A step-time ESTIMATE (a roofline, not a measurement) read from a compiled program's HLO.

    cost = analyze(compiled.as_text())            # per-chip totals, loop bodies x trip counts
    est = estimate(cost, CHIPS["v5p"])           # seconds per bound and the one that dominates
    est.seconds, est.bound                       # e.g. 81.2, "hbm"

XLA's `cost_analysis()` counts a while loop's body once, so for a program whose time is in its
loops (the layer scan, micro-batches, decode steps) it says nothing about time. Here the
optimized HLO text is walked instead, and every loop body is multiplied by its trip count:

  trip count  from the loop condition `counter < constant` (the form the layer scan, fori_loops
              and the decode loop's `step < R` take; the start value comes from the while's init
              tuple; XLA's known_trip_count when the backend writes one). A loop whose bound is
              not a constant (the prefill's causal block loop, whose bound is the outer chunk
              index) gets `unknown_trip` (default `triangular`: the mean of 0..T-1 for the
              longest enclosing loop of T steps) and is listed in `Cost.assumed`, so the
              estimate says what it guessed.
  FLOPs       2 x multiply-adds of every dot and convolution (XLA:TPU writes matmuls as
              convolutions; the window positions that fall in padding are not counted), inside
              fusions too. Elementwise work is not counted: these programs are matmul bound or
              memory bound, never elementwise bound.
  HBM bytes   every top-level instruction (a fusion is one) reads its operands and writes its
              result, except: arrays in memory space S(1) (on-chip VMEM after XLA's memory
              space assignment) are free, a dynamic-slice reads only its slice, a
              dynamic-update-slice (also as a fusion's root, in place) writes only its update and
              does not read the buffer it updates, bitcasts/tuples/parameters are free.
  collective  bytes each chip sends: all-gather its result, reduce-scatter and all-to-all and
              collective-permute their operand, all-reduce twice its operand (reduce-scatter +
              all-gather).

Time per bound = count / the chip's published peak; the estimate is the largest of the three
(compute, memory and communication assumed to overlap perfectly), so it is a LOWER bound on the
step time of this program on that chip. Peaks (`CHIPS`, per chip):

  v5p   459 TFLOP/s bf16, 2765 GB/s HBM, 1200 GB/s bidirectional ICI (600 GB/s one way)
        -- Google Cloud, "TPU v5p" (cloud.google.com/tpu/docs/v5p), key specifications table.
  h100  989 TFLOP/s bf16 dense (1979 is with sparsity), 3.35 TB/s HBM3, 900 GB/s NVLink
        -- NVIDIA H100 Tensor Core GPU datasheet, SXM column (nvidia.com/en-us/data-center/h100).
  h200  989 TFLOP/s bf16 dense, 4.8 TB/s HBM3e, 900 GB/s NVLink
        -- NVIDIA H200 Tensor Core GPU datasheet, SXM column (nvidia.com/en-us/data-center/h200).

The communication bound uses the one-way ICI/NVLink figure (half the bidirectional one) and all
of a chip's links at once, which flatters collectives that use one ring axis.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    flops_per_s: float  # dense bf16 matmul peak
    hbm_bytes_per_s: float
    ici_bytes_per_s: float  # one way, all links of the chip


CHIPS = {
    "v5p": Chip("v5p", 459e12, 2765e9, 600e9),
    "h100": Chip("h100", 989e12, 3.35e12, 450e9),
    "h200": Chip("h200", 989e12, 4.8e12, 450e9),
}


def chip_for(name: str) -> Chip | None:
    """The Chip of a topology or device name ("v5p:4x4x4", "H200", "NVIDIA H100 80GB HBM3")."""
    low = name.lower()
    for key, chip in CHIPS.items():
        if low.split(":", 1)[0] == key or key in low.replace(" ", "").replace("-", ""):
            return chip
    return None


@dataclasses.dataclass
class Cost:
    """Per-chip counts of one program run, loop bodies times their trip counts."""
    flops: float = 0.0
    hbm_bytes: float = 0.0
    collective_bytes: float = 0.0
    assumed: list[str] = dataclasses.field(default_factory=list)  # loops with a guessed trip count

    def __add__(self, o: "Cost") -> "Cost":
        return Cost(self.flops + o.flops, self.hbm_bytes + o.hbm_bytes,
                    self.collective_bytes + o.collective_bytes, self.assumed + o.assumed)

    def scaled(self, k: float) -> "Cost":
        return Cost(self.flops * k, self.hbm_bytes * k, self.collective_bytes * k, self.assumed)


@dataclasses.dataclass(frozen=True)
class Estimate:
    compute_s: float
    hbm_s: float
    collective_s: float

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.hbm_s, self.collective_s)

    @property
    def bound(self) -> str:
        return max((self.compute_s, "compute"), (self.hbm_s, "hbm"),
                   (self.collective_s, "ici"))[1]


def estimate(cost: Cost, chip: Chip) -> Estimate:
    return Estimate(cost.flops / chip.flops_per_s, cost.hbm_bytes / chip.hbm_bytes_per_s,
                    cost.collective_bytes / chip.ici_bytes_per_s)


# ----------------------------------------------------------------------------- HLO text parsing

_ITEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
               "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"([a-z][a-z0-9]*)\[([0-9,]*)\](\{[^}]*\})?")
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
         "partition-id", "replica-id", "opt-barrier", "iota", "copy-done", "all-gather-done",
         "all-reduce-done", "collective-permute-done", "send-done", "recv-done", "slice-done",
         "async-done", "async-update", "add-dependency"}
_COLLECTIVES = {"all-gather": "out", "all-gather-start": "out", "reduce-scatter": "in",
                "all-to-all": "in", "collective-permute": "in", "collective-permute-start": "in",
                "all-reduce": "in2", "all-reduce-start": "in2"}


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


def _hbm(arrays: Sequence[Array]) -> int:
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
    if line[i] == "(":
        j = _balanced(line, i)
    else:
        j = line.index(" ", i)
    type_text = line[i:j]
    rest = line[j:].lstrip()
    om = re.match(r"([a-z][a-z0-9\-]*)\(", rest)
    if not om:
        return None
    k = _balanced(rest, om.end() - 1)
    operands = re.findall(r"%([\w.\-]+)", rest[om.end():k - 1])
    return Instr(m.group(2), parse_type(type_text), om.group(1), operands, rest[k:],
                 bool(m.group(1)), rest[om.end():k - 1].strip())


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
            pm = re.match(r"\s*(\d+)", line[line.index("parameter(") + len("parameter("):])
            cur.params[int(pm.group(1))] = ins
    if not entry:
        raise ValueError("no ENTRY computation in the HLO text")
    return comps, entry


def _attr(attrs: str, key: str) -> str | None:
    m = re.search(rf"\b{key}=(%?[\w.\-]+)", attrs)
    return m.group(1).lstrip("%") if m else None


def _called(attrs: str, key: str) -> list[str]:
    m = re.search(rf"\b{key}=\{{([^}}]*)\}}", attrs)
    if m:
        return [s.strip().lstrip("%") for s in m.group(1).split(",") if s.strip()]
    one = _attr(attrs, key)
    return [one] if one else []


# ----------------------------------------------------------------------------- FLOPs

def _dims_list(s: str | None) -> list[int]:
    return [int(x) for x in s.split(",") if x] if s else []


def dot_flops(ins: Instr, comp: Computation) -> float:
    lhs = comp.instrs.get(ins.operands[0])
    m = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", ins.attrs)
    contract = 1
    if lhs is not None and m:
        contract = math.prod(lhs.type[0].dims[d] for d in _dims_list(m.group(1)))
    return 2.0 * math.prod(ins.type[0].dims) * contract


def _valid_window_pairs(out_size: int, in_size: int, size: int, stride: int, pad_lo: int,
                        lhs_dil: int, rhs_dil: int) -> int:
    """(output position, window tap) pairs of one spatial dim that land on a real input."""
    n = 0
    for o in range(out_size):
        for k in range(size):
            pos = o * stride + k * rhs_dil - pad_lo
            if pos >= 0 and pos % lhs_dil == 0 and pos // lhs_dil < in_size:
                n += 1
    return n


def conv_flops(ins: Instr, comp: Computation) -> float:
    """2 x multiply-adds of a convolution, padding taps not counted (XLA:TPU's dot form)."""
    m = re.search(r"dim_labels=([\w]+)_([\w]+)->([\w]+)", ins.attrs)
    lhs = comp.instrs.get(ins.operands[0])
    rhs = comp.instrs.get(ins.operands[1])
    if not m or lhs is None or rhs is None:
        return 0.0
    lhs_l, rhs_l, out_l = m.groups()
    ldims, rdims, odims = lhs.type[0].dims, rhs.type[0].dims, ins.type[0].dims
    groups = int(_attr(ins.attrs, "feature_group_count") or 1)
    in_feat = rdims[rhs_l.index("i")]
    out_elems = math.prod(odims)
    spatial = [c for c in out_l if c.isdigit()]
    wm = re.search(r"window=\{([^}]*)\}", ins.attrs)
    win = dict(re.findall(r"(\w+)=([\w_x]+)", wm.group(1))) if wm else {}

    def field(key, default):
        v = win.get(key)
        return [default] * len(spatial) if v is None else v.split("x")

    sizes = [int(s) for s in field("size", "1")]
    strides = [int(s) for s in field("stride", "1")]
    pads = [p.split("_") for p in field("pad", "0_0")]
    lhs_dil = [int(s) for s in field("lhs_dilate", "1")]
    rhs_dil = [int(s) for s in field("rhs_dilate", "1")]
    taps_per_out = 1.0
    for i, c in enumerate(spatial):
        out_size = odims[out_l.index(c)]
        in_size = ldims[lhs_l.index(c)]
        pairs = _valid_window_pairs(out_size, in_size, sizes[i], strides[i], int(pads[i][0]),
                                    lhs_dil[i], rhs_dil[i])
        taps_per_out *= pairs / max(out_size, 1)
    del groups  # rhs's input-feature dim already counts the features of one group
    return 2.0 * out_elems * in_feat * taps_per_out


# ----------------------------------------------------------------------------- the walk

class _Walker:
    def __init__(self, comps: dict[str, Computation], unknown_trip: Callable[[str, tuple[int, ...]], float]):
        self.comps = comps
        self.unknown_trip = unknown_trip

    def _compares(self, cond: Computation):
        """(direction, lhs, rhs) of the condition's compares, operands as cond's instructions
        (a compare wrapped in a fusion, as XLA:CPU writes it, is looked through)."""
        for c in cond.instrs.values():
            if c.opcode == "compare":
                yield _attr(c.attrs, "direction"), *(cond.instrs.get(o) for o in c.operands[:2])
            elif c.opcode == "fusion":
                fused = self.comps.get(_attr(c.attrs, "calls") or "")
                if fused is None:
                    continue
                by_param = {p.name: i for i, p in fused.params.items()}
                for f in fused.instrs.values():
                    if f.opcode == "compare" and all(o in by_param for o in f.operands[:2]):
                        yield _attr(f.attrs, "direction"), *(
                            cond.instrs.get(c.operands[by_param[o]]) for o in f.operands[:2])

    def trip_count(self, ins: Instr, comp: Computation, frames: tuple) -> tuple[float, int, str | None]:
        """(trip count, counter's tuple index or -1, note when guessed) of a while loop."""
        known = re.search(r'"known_trip_count":\{"n":"(\d+)"', ins.attrs)
        trip, counter, note = self._trip_from_condition(ins, comp, frames)
        if known:
            return int(known.group(1)), counter, None
        return trip, counter, note

    def _trip_from_condition(self, ins: Instr, comp: Computation, frames: tuple):
        cond = self.comps[_attr(ins.attrs, "condition")]
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
            idx = int(_attr(a.attrs, "index") or 0)
            src = init_of(idx)
            start = (self.mean_value(comp.name, src.name, ()) if src is not None else None) or 0
            if b.opcode == "constant":
                return max(int(_int_literal(b) - start) + (d == "LE"), 0), idx, None
            if b.opcode == "get-tuple-element" and dynamic is None:
                bound = init_of(int(_attr(b.attrs, "index") or 0))
                mean = None if bound is None else self.mean_value(comp.name, bound.name, frames)
                if mean is not None:
                    dynamic = (max(mean - start + (d == "LE"), 0.0), idx)
        if dynamic is not None:
            return dynamic[0], dynamic[1], (f"{ins.name}: bound follows an outer loop's counter, "
                                            f"mean {dynamic[0]:.4g} trips")
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
            return float(_int_literal(ins))
        if op in ("convert", "bitcast", "copy", "reshape", "broadcast") and ins.operands:
            return self.mean_value(comp_name, ins.operands[0], frames, depth + 1)
        if op in _ARITH:
            vals = [self.mean_value(comp_name, o, frames, depth + 1) for o in ins.operands]
            return None if any(v is None for v in vals) else _ARITH[op](*vals)
        if op == "compare" and len(ins.operands) == 2:  # evaluated at the means
            a, b = (self.mean_value(comp_name, o, frames, depth + 1) for o in ins.operands)
            d = _attr(ins.attrs, "direction")
            return None if a is None or b is None or d not in _COMPARE else float(_COMPARE[d](a, b))
        if op == "select" and len(ins.operands) == 3:  # e.g. floor division's sign fix-up
            p, a, b = (self.mean_value(comp_name, o, frames, depth + 1) for o in ins.operands)
            if a is None or b is None:
                return None
            return (a + b) / 2 if p is None else (a if p else b)
        if op == "fusion":
            fused = self.comps.get(_attr(ins.attrs, "calls") or "")
            if fused is None or fused.root is None:
                return None
            vals = [self.mean_value(comp_name, o, frames, depth + 1) for o in ins.operands]
            return _eval_fused(fused, fused.root.name, vals)
        if op == "get-tuple-element" and frames:
            src = comp.instrs.get(ins.operands[0]) if ins.operands else None
            outer_comp, while_name, trip, start, counter = frames[-1]
            if src is None or src.opcode != "parameter":
                return None
            idx = int(_attr(ins.attrs, "index") or 0)
            if idx == counter:
                return start + (trip - 1) / 2
            w = self.comps[outer_comp].instrs[while_name]
            body = self.comps[_attr(w.attrs, "body")]
            root = body.root
            passes = (root is not None and root.opcode == "tuple" and idx < len(root.operands)
                      and body.instrs[root.operands[idx]].opcode == "get-tuple-element"
                      and int(_attr(body.instrs[root.operands[idx]].attrs, "index") or -1) == idx)
            init = self.comps[outer_comp].instrs.get(w.operands[0])
            if not passes or init is None or init.opcode != "tuple":
                return None  # changes from step to step in a way not followed here
            return self.mean_value(outer_comp, init.operands[idx], frames[:-1], depth + 1)
        return None

    def fusion_bytes(self, ins: Instr, comp: Computation) -> int:
        fused = self.comps.get(_attr(ins.attrs, "calls") or "")
        if fused is None:
            return _hbm(ins.type) + sum(_hbm(comp.instrs[o].type) for o in ins.operands
                                        if o in comp.instrs)
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
        for r, arr in zip(roots, ins.type if len(roots) > 1 else [ins.type] * len(roots)):
            arrs = arr if isinstance(arr, list) else [arr]
            if r.opcode == "dynamic-update-slice":
                in_place.add(through_bitcast(r.operands[0]))
                upd = fused.instrs.get(r.operands[1])
                out_bytes += 0 if all(a.vmem for a in arrs) else (
                    sum(a.bytes for a in upd.type) if upd else 0)
            else:
                out_bytes += _hbm(arrs)
        in_bytes = 0
        for i, o in enumerate(ins.operands):
            src = comp.instrs.get(o)
            p = fused.params.get(i)
            if src is None or p is None or p.name in in_place:
                continue
            if all(a.vmem for a in src.type):
                continue
            sliced = self._sliced_read(fused.name, i)
            in_bytes += _hbm(src.type) if sliced is None else sliced
        return in_bytes + out_bytes

    @functools.lru_cache(maxsize=None)
    def _sliced_read(self, fused_name: str, index: int) -> int | None:
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
                elif u.opcode == "fusion" and (_attr(u.attrs, "calls") or "") in self.comps:
                    inner = [self._sliced_read(_attr(u.attrs, "calls"), j)
                             for j, o in enumerate(u.operands) if o == name]
                    if any(x is None for x in inner):
                        return None
                    total += sum(inner)
                else:
                    return None
        return total

    def _loop(self, ins: Instr, comp: Computation, frames: tuple):
        """(trip count, frames inside the loop, note when guessed) of a while instruction."""
        trip, counter, note = self.trip_count(ins, comp, frames)
        init = comp.instrs.get(ins.operands[0]) if ins.operands else None
        src = (comp.instrs.get(init.operands[counter]) if init is not None and
               init.opcode == "tuple" and 0 <= counter < len(init.operands) else None)
        start = (self.mean_value(comp.name, src.name, ()) if src is not None else None) or 0
        return trip, frames + ((comp.name, ins.name, max(int(trip), 1), start, counter),), note

    @staticmethod
    def _branches(ins: Instr) -> list[str]:
        return _called(ins.attrs, "branch_computations") or (
            _called(ins.attrs, "true_computation") + _called(ins.attrs, "false_computation"))

    @functools.lru_cache(maxsize=None)
    def walk(self, name: str, frames: tuple) -> Cost:
        """Cost of one run of computation `name`; frames: the enclosing loops, outermost first,
        as (computation holding the while, while name, trip count, counter start, counter
        index)."""
        comp = self.comps[name]
        total = Cost()
        for ins in comp.instrs.values():
            op = ins.opcode
            if op == "while":
                trip, inner, note = self._loop(ins, comp, frames)
                body = self.walk(_attr(ins.attrs, "body"), inner)
                cond = self.walk(_attr(ins.attrs, "condition"), inner)
                total += (body + cond).scaled(trip)
                if note:
                    total.assumed.append(note)
            elif op in ("call", "async-start"):
                for c in _called(ins.attrs, "to_apply") + _called(ins.attrs, "calls"):
                    total += self.walk(c, frames)
            elif op == "conditional":
                costs = [self.walk(b, frames) for b in self._branches(ins)]
                if costs:
                    total += max(costs, key=lambda c: (c.hbm_bytes, c.flops))
            else:
                total += self.instr_cost(ins, comp)
        return total

    def records(self, name: str, frames: tuple, mult: float, out: list) -> None:
        """(cost x executions, executions, computation, instruction) of every costed
        instruction under `name` (a conditional's branches all listed, each as if taken)."""
        comp = self.comps[name]
        for ins in comp.instrs.values():
            if ins.opcode == "while":
                trip, inner, _ = self._loop(ins, comp, frames)
                for c in (_attr(ins.attrs, "body"), _attr(ins.attrs, "condition")):
                    self.records(c, inner, mult * trip, out)
            elif ins.opcode in ("call", "async-start", "conditional"):
                for c in (_called(ins.attrs, "to_apply") + _called(ins.attrs, "calls")
                          + (self._branches(ins) if ins.opcode == "conditional" else [])):
                    self.records(c, frames, mult, out)
            else:
                c = self.instr_cost(ins, comp)
                if c.flops or c.hbm_bytes or c.collective_bytes:
                    out.append((c.scaled(mult), mult, name, ins))

    def instr_cost(self, ins: Instr, comp: Computation) -> Cost:
        """Cost of one execution of a non-control instruction."""
        op = ins.opcode
        total = Cost()
        if op in _FREE:
            return total
        operands = [comp.instrs[o] for o in ins.operands if o in comp.instrs]
        if op == "fusion":
            total.flops += self.fused_flops(_attr(ins.attrs, "calls"))
            total.hbm_bytes += self.fusion_bytes(ins, comp)
            return total
        if op in ("dynamic-slice", "slice"):
            total.hbm_bytes += 2 * _hbm(ins.type)
            return total
        if op == "dynamic-update-slice":
            total.hbm_bytes += 2 * (_hbm(operands[1].type) if len(operands) > 1 else 0)
            return total
        if op == "scatter":  # in place: reads the indices and updates, writes the updates
            upd = operands[len(operands) // 2 + 1:] if len(operands) >= 3 else []
            total.hbm_bytes += sum(2 * _hbm(o.type) for o in upd) + (
                _hbm(operands[len(operands) // 2].type) if len(operands) >= 3 else 0)
            return total
        if op in ("convolution", "dot"):
            total.flops += conv_flops(ins, comp) if op == "convolution" else dot_flops(ins, comp)
        if op in _COLLECTIVES:
            kind = _COLLECTIVES[op]
            arrays = ins.type if kind == "out" else [a for o in operands for a in o.type]
            if op.endswith("-start") and kind == "out":  # (operands, result) tuple
                arrays = ins.type[len(arrays) // 2:] if len(ins.type) > 1 else ins.type
            n = sum(a.bytes for a in arrays)
            total.collective_bytes += 2 * n if kind == "in2" else n
        total.hbm_bytes += _hbm(ins.type) + sum(_hbm(o.type) for o in operands)
        return total

    @functools.lru_cache(maxsize=None)
    def fused_flops(self, name: str | None) -> float:
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
                f += self.fused_flops(_attr(ins.attrs, "calls"))
        return f


_ARITH = {"add": lambda a, b: a + b, "subtract": lambda a, b: a - b,
          "multiply": lambda a, b: a * b, "divide": lambda a, b: a / b if b else 0.0,
          "maximum": max, "minimum": min, "clamp": lambda lo, x, hi: min(max(x, lo), hi),
          "and": lambda a, b: float(bool(a) and bool(b)), "or": lambda a, b: float(bool(a) or bool(b)),
          "not": lambda a: float(not a), "negate": lambda a: -a, "abs": abs, "shift-left": lambda a, b: a * 2**b,
          "shift-right-logical": lambda a, b: abs(a) / 2**b,
          "shift-right-arithmetic": lambda a, b: a / 2**b}


_COMPARE = {"LT": lambda a, b: a < b, "LE": lambda a, b: a <= b, "GT": lambda a, b: a > b,
            "GE": lambda a, b: a >= b, "EQ": lambda a, b: a == b, "NE": lambda a, b: a != b}


def _eval_fused(fused: Computation, name: str, params: list) -> float | None:
    ins = fused.instrs.get(name)
    if ins is None:
        return None
    if ins.opcode == "parameter":
        i = next((k for k, p in fused.params.items() if p.name == name), None)
        return None if i is None or i >= len(params) else params[i]
    if ins.opcode == "constant":
        return float(_int_literal(ins))
    if ins.opcode in ("convert", "bitcast", "copy", "reshape", "broadcast") and ins.operands:
        return _eval_fused(fused, ins.operands[0], params)
    if ins.opcode in _ARITH:
        vals = [_eval_fused(fused, o, params) for o in ins.operands]
        return None if any(v is None for v in vals) else _ARITH[ins.opcode](*vals)
    if ins.opcode == "compare" and len(ins.operands) == 2:
        a, b = (_eval_fused(fused, o, params) for o in ins.operands)
        d = _attr(ins.attrs, "direction")
        return None if a is None or b is None or d not in _COMPARE else float(_COMPARE[d](a, b))
    if ins.opcode == "select" and len(ins.operands) == 3:
        p, a, b = (_eval_fused(fused, o, params) for o in ins.operands)
        if a is None or b is None:
            return None
        return (a + b) / 2 if p is None else (a if p else b)
    return None


def _int_literal(ins: Instr) -> int:
    try:
        return int(float(ins.literal))
    except ValueError:
        return 0


def triangular(_name: str, outer: tuple[int, ...]) -> float:
    """Default guess for a loop whose bound is not a constant: a causal block loop, whose bound
    is the counter of an enclosing loop of T steps (taken as the longest enclosing loop), runs
    the mean of 0..T-1 times; 1 at the top level."""
    T = max(outer, default=1)
    return max((T - 1) / 2, 1.0)


def analyze(hlo_text: str, unknown_trip: Callable[[str, tuple[int, ...]], float] = triangular) -> Cost:
    """Per-chip FLOPs, HBM bytes and collective bytes of one run of the program."""
    comps, entry = parse_module(hlo_text)
    return _Walker(comps, unknown_trip).walk(entry, ())



def summary(hlo_text: str, chip: Chip) -> dict:
    """The estimate of one run of a compiled program on `chip`, as a JSON-able dict."""
    cost = analyze(hlo_text)
    est = estimate(cost, chip)
    return dict(chip=chip.name, seconds=est.seconds, bound=est.bound, compute_s=est.compute_s,
                hbm_s=est.hbm_s, collective_s=est.collective_s, flops=cost.flops,
                hbm_bytes=cost.hbm_bytes, collective_bytes=cost.collective_bytes,
                assumed=cost.assumed)


def rl_step_seconds(cfg, phase, est_by_fn: dict[str, dict]) -> dict | None:
    """Estimated seconds of one RL step of `phase` from its functions' estimates: sampler calls
    per generation round (gen_B / sample_B prompts per call) x one round, the old-logprob pass
    (twice with a KL reference) and the update. None when a function has no estimate."""
    from qwenlong_jax.run.step_shapes import PREFILL_CHUNK, rl_step_shapes
    if any(not est_by_fn.get(f) for f in ("sample", "old_logp", "update")):
        return None
    s = rl_step_shapes(phase, cfg.rl, PREFILL_CHUNK)
    calls = -(-s.gen_B // s.sample_B)
    logp_passes = 2 if cfg.rl.kl_coef else 1
    parts = {"sample": calls * est_by_fn["sample"]["seconds"],
             "old_logp": logp_passes * est_by_fn["old_logp"]["seconds"],
             "update": est_by_fn["update"]["seconds"]}
    return dict(calls=calls, logp_passes=logp_passes, parts=parts, seconds=sum(parts.values()),
                max_rounds=cfg.rl.max_gen_rounds)


def format_rl_steps(cfg, results) -> str:
    """One line per RL phase: the estimated step time (roofline, one generation round)."""
    lines = []
    for ph in cfg.phases:
        if ph.kind != "rl":
            continue
        by_fn = {r.fn: r.est for r in results if r.phase == ph.name}
        step = rl_step_seconds(cfg, ph, by_fn)
        if step is None:
            continue
        p = step["parts"]
        lines.append(
            f"{ph.name}: estimated RL step (roofline, not measured) {step['seconds']:.0f}s = "
            f"sample {step['calls']} calls x {by_fn['sample']['seconds']:.3g}s "
            f"({p['sample']:.0f}s, every sample at max_output) + old_logp {p['old_logp']:.0f}s "
            f"+ update {p['update']:.0f}s; each DAPO refill round (up to "
            f"{step['max_rounds']}) adds {p['sample']:.0f}s")
    return "\n".join(lines)


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
