"""Published per-chip peaks the step-time estimate divides by (`CHIPS`, per chip):

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
