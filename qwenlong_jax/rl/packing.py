"""Shared-prefix packing of GRPO groups (host-side numpy), and the naive layout it replaces.

A group is G responses to ONE prompt. Packed, it is one row

    [prompt | resp_1 | resp_2 | ... | resp_G | pad]
    segment:  1  |   2    |   3    | ... |  G+1   |  0
    position: 0..P-1 | P..P+l1-1 | P..P+l2-1 | ...

and the model runs with `shared_prefix_segment=1`: response g attends to the prompt and
causally to itself only, every response's RoPE positions start right after the prompt, so
every logit equals the one of the unpacked sequence [prompt | resp_g]. The prompt is run
once instead of G times.

Each response token is scored from a *source* position: the previous token of the same
response, except the first one, which is predicted from the prompt's last token (shared by
all G responses). `src_BW` holds that index; `unpack_idx_NR` maps (sample, response token)
back to its packed position so the loss runs on the usual [N, R] layout (N = groups x G).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

PROMPT_SEGMENT = 1


@dataclasses.dataclass(frozen=True)
class PackedRows:
    tokens_BW: np.ndarray  # int32
    positions_BW: np.ndarray  # int32
    segment_ids_BW: np.ndarray  # int32, 0 = padding
    src_BW: np.ndarray  # int32, index of the hidden state that predicts token [b, w] (0 if unused)
    unpack_idx_NR: np.ndarray  # int32, flat index b * W + w of response token r of sample n
    mask_NR: np.ndarray  # float32, 1 on valid response tokens
    shared_prefix_segment: int | None


def _check(prompts, responses, group_size):
    if len(responses) != len(prompts) * group_size:
        raise ValueError(
            f"need {len(prompts)} prompts x group_size {group_size} = {len(prompts) * group_size} "
            f"responses, got {len(responses)}"
        )
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty")


def packed_row_length(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], group_size: int) -> int:
    return max(
        len(p) + sum(len(r) for r in responses[i * group_size : (i + 1) * group_size]) for i, p in enumerate(prompts)
    )


def pack_groups(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], group_size: int, row_len: int, resp_len: int
) -> PackedRows:
    """One packed row per prompt. `responses` are grouped contiguously (G per prompt)."""
    _check(prompts, responses, group_size)
    B, W, N, R = len(prompts), row_len, len(responses), resp_len
    tokens = np.zeros((B, W), np.int32)
    pos = np.zeros((B, W), np.int32)
    seg = np.zeros((B, W), np.int32)
    src = np.zeros((B, W), np.int32)
    unpack = np.zeros((N, R), np.int32)
    mask = np.zeros((N, R), np.float32)
    for b, prompt in enumerate(prompts):
        P = len(prompt)
        used = P + sum(len(r) for r in responses[b * group_size : (b + 1) * group_size])
        if used > W:
            raise ValueError(f"group {b} needs {used} tokens, more than the packed row length {W}")
        tokens[b, :P] = prompt
        pos[b, :P] = np.arange(P)
        seg[b, :P] = PROMPT_SEGMENT
        src[b, 1:P] = np.arange(P - 1)
        w = P
        for g in range(group_size):
            n = b * group_size + g
            resp = responses[n]
            L = len(resp)
            if L > R:
                raise ValueError(f"response {n} has {L} tokens, more than resp_len {R}")
            tokens[b, w : w + L] = resp
            pos[b, w : w + L] = P + np.arange(L)
            seg[b, w : w + L] = PROMPT_SEGMENT + 1 + g
            if L:
                src[b, w] = P - 1
                src[b, w + 1 : w + L] = np.arange(w, w + L - 1)
            unpack[n, :L] = b * W + w + np.arange(L)
            mask[n, :L] = 1.0
            w += L
    return PackedRows(tokens, pos, seg, src, unpack, mask, PROMPT_SEGMENT)


def unpacked_rows(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], group_size: int, row_len: int, resp_len: int
) -> PackedRows:
    """The naive layout: one row [prompt | response] per sample (the prompt copied G times)."""
    _check(prompts, responses, group_size)
    N, W, R = len(responses), row_len, resp_len
    tokens = np.zeros((N, W), np.int32)
    pos = np.zeros((N, W), np.int32)
    seg = np.zeros((N, W), np.int32)
    src = np.zeros((N, W), np.int32)
    unpack = np.zeros((N, R), np.int32)
    mask = np.zeros((N, R), np.float32)
    for n, resp in enumerate(responses):
        prompt = prompts[n // group_size]
        P, L = len(prompt), len(resp)
        if P + L > W or L > R:
            raise ValueError(f"sample {n}: {P}+{L} tokens do not fit row {W} / resp_len {R}")
        tokens[n, :P], tokens[n, P : P + L] = prompt, resp
        pos[n, : P + L] = np.arange(P + L)
        seg[n, : P + L] = 1
        src[n, 1 : P + L] = np.arange(P + L - 1)
        unpack[n, :L] = n * W + P + np.arange(L)
        mask[n, :L] = 1.0
    return PackedRows(tokens, pos, seg, src, unpack, mask, None)


def round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple
