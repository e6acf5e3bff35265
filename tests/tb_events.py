"""Read TensorBoard event files written by tensorboardX (no TensorFlow needed): TFRecord
framing (u64 length, u32 crc, payload, u32 crc) around `Event` protos."""

from __future__ import annotations

import os
import struct


def scalar_steps(logdir: str, tag: str) -> list[int]:
    """Every step at which `tag` was recorded, over all event files in `logdir` (sorted, with
    repeats when two runs wrote the same step)."""
    from tensorboardX.proto import event_pb2

    steps = []
    for name in sorted(os.listdir(logdir)):
        if "tfevents" not in name:
            continue
        with open(os.path.join(logdir, name), "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[pos : pos + 8])
            if pos + 12 + n + 4 > len(data):
                break  # a torn last record
            ev = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
            pos += 12 + n + 4
            if ev.HasField("summary"):
                steps += [ev.step for v in ev.summary.value if v.tag == tag]
    return sorted(steps)
