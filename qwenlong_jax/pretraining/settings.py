"""One pretraining stage's settings (the pretrain command's flags, same names): no jax here, so
the command line answers --help and bad flags at once."""

from __future__ import annotations

import dataclasses
from typing import TypedDict

from qwenlong_jax.data.pretrain import QA_RESERVE


class BaseShape(TypedDict):
    """The shipped base model's shape (HF Qwen2 config keys)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rope_theta: float
    tie_word_embeddings: bool


BASE_SHAPE = BaseShape(
    hidden_size=128,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=32,
    intermediate_size=512,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
    """One pretraining stage (the pretrain command's flags, same names)."""

    out: str = "qwenlong_jax/assets/base"
    tokenizer: str = ""  # '' = the embedded one
    minutes: float = 75.0  # wall-clock budget
    steps: int = 0  # step budget (overrides minutes when > 0)
    seq_len: int = 512
    rows: int = 8  # packed rows per step
    max_doc_tokens: int = 448
    lr: float = 2e-3
    warmup: int = 100
    seed: int = 0
    save_every: int = 200
    questions: int = 4  # QA lines per document
    restate: float = 0.5  # share of QA lines restating the fact
    attributes: int = 8  # fact attributes (1: the name alone is the key)
    chat_fraction: float = 0.25
    qa_reserve: int = QA_RESERVE  # document tokens given up per QA line; 0 = QA lines on top
    copy_fraction: float = 0.0  # share of examples that are copy drills (a random sequence, then again)
    loss_on: str = "answers"  # "all" tokens, or only QA lines and chat responses (data/pretrain.py)
    init_from: str = ""  # continue from an HF checkpoint (fresh optimizer)
    hidden_size: int = BASE_SHAPE["hidden_size"]
    num_layers: int = BASE_SHAPE["num_layers"]
    probe_lengths: tuple[int, ...] = (128, 320)  # documents of the held-out lookup probe, logged at each save
