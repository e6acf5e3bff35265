"""FLOPs of one dot or convolution: 2 x multiply-adds.

XLA:TPU writes matmuls as convolutions; the window positions that fall in padding are not
counted. Elementwise work is not counted at all: these programs are matmul bound or memory
bound, never elementwise bound.
"""

from __future__ import annotations

import math
import re

from qwenlong_jax.capacity.hlo import Computation, Instr, attr


def _dims_list(s: str | None) -> list[int]:
    return [int(x) for x in s.split(",") if x] if s else []


def dot_flops(ins: Instr, comp: Computation) -> float:
    lhs = comp.instrs.get(ins.operands[0])
    m = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", ins.attrs)
    contract = 1
    if lhs is not None and m:
        contract = math.prod(lhs.type[0].dims[d] for d in _dims_list(m.group(1)))
    return 2.0 * math.prod(ins.type[0].dims) * contract


def _valid_window_pairs(
    out_size: int, in_size: int, size: int, stride: int, pad_lo: int, lhs_dil: int, rhs_dil: int
) -> int:
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
    groups = int(attr(ins.attrs, "feature_group_count") or 1)
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
        pairs = _valid_window_pairs(out_size, in_size, sizes[i], strides[i], int(pads[i][0]), lhs_dil[i], rhs_dil[i])
        taps_per_out *= pairs / max(out_size, 1)
    del groups  # rhs's input-feature dim already counts the features of one group
    return 2.0 * out_elems * in_feat * taps_per_out
