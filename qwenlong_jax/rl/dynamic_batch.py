"""The reference's dynamic-batch loss weighting (`rl.loss_scope="dynamic"`), as per-token
coefficients computed on the host.

The reference (verl's actor with `use_dynamic_bsz`) splits each mini-batch of S sequences into
K = ceil(total tokens / token budget) micro-batches, balanced by sequence length (prompt +
response tokens) with the largest differencing method (Karmarkar-Karp), and backpropagates

    loss = sum_p (S_p / S) * token_mean_p(actor loss)

S_p the sequences and token_mean_p the response-token mean of micro-batch p. A token of micro-
batch p therefore weighs (S_p / S) / T_p, T_p the response tokens of p: a sequence that shares
its micro-batch with few others weighs more than in the exact token-mean, close to the
sequence mean when micro-batches hold one or two sequences (30-70K-token sequences under an
80K budget).

Our physical micro-batches are fixed-shape ([M, U, Nm, R], rl.micro_batch groups); the
reference's partition is a weighting only, so `token_coef` computes each token's weight in
its mini-batch's loss and divides it by its physical micro-batch's share of the mini-batch's
tokens, the weight grpo_update gives that micro-batch (as for "mini_batch"). Padding rows (no
response token) are no sequences. Where the reference spreads a mini-batch over D data-parallel
ranks it partitions each rank's share with its own budget; we partition the whole mini-batch
as one rank (a budget of D x the reference's per-GPU budget gives micro-batches of the same
size).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import numpy as np


class _Set:
    """One partition under construction: its items (index, length) in insertion order."""

    def __init__(self, items=()):
        self.items = list(items)
        self.sum = sum(v for _, v in self.items)

    def key(self):
        return (self.sum, len(self.items), self.items)


class _State:
    """k sets, largest first; states with the largest spread are merged first."""

    def __init__(self, sets: list[_Set]):
        self.sets = sorted(sets, key=_Set.key, reverse=True)

    @property
    def spread(self) -> int:
        return self.sets[0].sum - self.sets[-1].sum

    def __lt__(self, other: _State) -> bool:  # heapq pops the smallest: the largest spread
        if self.spread != other.spread:
            return self.spread > other.spread
        return self.sets[0].key() > other.sets[0].key()


def balanced_partitions(lengths: Sequence[int], k: int) -> list[list[int]]:
    """k lists of indices into `lengths` (each sorted) whose length sums are balanced: the
    largest differencing method, with the reference's order of merges and ties."""
    if not 1 <= k <= len(lengths):
        raise ValueError(f"need 1 <= k <= {len(lengths)} items, got k={k}")
    heap: list[_State] = []
    for length, i in sorted((int(v), i) for i, v in enumerate(lengths)):
        heapq.heappush(heap, _State([_Set([(i, length)])] + [_Set() for _ in range(k - 1)]))
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        merged = [_Set(a.sets[j].items + b.sets[k - 1 - j].items) for j in range(k)]
        heapq.heappush(heap, _State(merged))
    return [sorted(i for i, _ in s.items) for s in heap[0].sets]


def micro_batch_weights(seq_tokens_N: np.ndarray, resp_tokens_N: np.ndarray, token_budget: int) -> np.ndarray:
    """float64 [N]: each real sequence's per-token weight (S_p / S) / T_p in one mini-batch's
    loss (module docstring); 0 for padding rows (resp_tokens 0). seq_tokens: prompt + response."""
    real = np.flatnonzero(resp_tokens_N > 0)
    out = np.zeros(len(resp_tokens_N), np.float64)
    if not len(real):
        return out
    seq = np.asarray(seq_tokens_N)[real]
    k = min(max(1, math.ceil(int(seq.sum()) / token_budget)), len(real))
    for part in balanced_partitions(seq.tolist(), k):
        idx = real[part]
        out[idx] = (len(idx) / len(real)) / float(resp_tokens_N[idx].sum())
    return out


def token_coef(mask_MUNR: np.ndarray, seq_tokens_MUN: np.ndarray, token_budget: int) -> np.ndarray:
    """float32 [M, U, Nm, R]: the coefficient of each response token in its micro-batch's loss
    (sum of coef x per-token actor loss), such that the micro-batches weighted by their token
    share (grpo_step.update_weights) give the reference's dynamic-batch loss per mini-batch."""
    mask = np.asarray(mask_MUNR, np.float64)
    M, U, Nm, _ = mask.shape
    resp_MUN = mask.sum(-1)
    coef = np.zeros(mask.shape, np.float64)
    for m in range(M):
        w_N = micro_batch_weights(
            np.asarray(seq_tokens_MUN[m]).reshape(-1), resp_MUN[m].reshape(-1), token_budget
        ).reshape(U, Nm)
        tok_U = resp_MUN[m].sum(-1)
        share_U = tok_U / max(tok_U.sum(), 1.0)
        scale_U = np.where(share_U > 0, 1.0 / np.where(share_U > 0, share_U, 1.0), 0.0)
        coef[m] = w_N[:, :, None] * scale_U[:, None, None] * mask[m]
    return coef.astype(np.float32)
