"""The model an evaluation samples from and its generation: sampling settings (the paper's
evaluation sampling by default), the checkpoint and tokenizer loaded with one-line errors, and
`num_samples` decoded responses per prompt through a sampler (`sampling.generate` by default)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from qwenlong_jax import paths
from qwenlong_jax.eval.benchmarks import EvalError
from qwenlong_jax.rewards.segment import strip_eos

if TYPE_CHECKING:
    from qwenlong_jax.data.tokenizer import Tokenizer
    from qwenlong_jax.models import ModelConfig

GenerateFn = Callable[..., list]


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """docs/recipe.md's evaluation sampling by default; `greedy()` for deterministic runs."""

    max_new_tokens: int = 10_000
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    num_samples: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens <= 0 or self.num_samples <= 0:
            raise EvalError(
                f"max_new_tokens and num_samples must be > 0, got {self.max_new_tokens} and {self.num_samples}"
            )
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise EvalError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature} and {self.top_p}")

    @classmethod
    def greedy(cls, max_new_tokens: int, num_samples: int = 1) -> SamplingSettings:
        return cls(max_new_tokens=max_new_tokens, temperature=0.0, top_p=1.0, top_k=0, num_samples=num_samples)


@dataclasses.dataclass(frozen=True)
class Model:
    cfg: ModelConfig
    params: dict = dataclasses.field(repr=False)
    tokenizer: Tokenizer = dataclasses.field(repr=False)


def load_model(checkpoint: str, tokenizer_path: str | None = None, dtype: str = "float32", mesh=None) -> Model:
    import jax.numpy as jnp

    from qwenlong_jax import models
    from qwenlong_jax.data.tokenizer import find_tokenizer, load_tokenizer

    problem = paths.local_problem(checkpoint, "dir") if not paths.is_remote(checkpoint) else None
    if problem and problem != "does not exist":  # a symlink loop, permission, a file: say so
        raise EvalError(f"checkpoint {checkpoint!r} {problem}")
    if not os.path.isfile(os.path.join(checkpoint, "config.json")):
        hint = (
            f"; a training workdir? its export is {os.path.join(checkpoint, 'hf')}"
            if os.path.isfile(os.path.join(checkpoint, "hf", "config.json"))
            else ""
        )
        raise EvalError(
            f"checkpoint {checkpoint!r}: no config.json (expected an HF model "
            f"directory or the trainer's hf/ export){hint}"
        )
    tok_path = find_tokenizer(tokenizer_path, checkpoint)
    if tok_path is None:
        raise EvalError(f"checkpoint {checkpoint!r}: no tokenizer/ or tokenizer.json in it; pass --tokenizer")
    try:
        tokenizer = load_tokenizer(tok_path)
        cfg, params = models.load_hf_checkpoint(checkpoint, dtype=jnp.dtype(dtype), mesh=mesh)
    except (ValueError, OSError) as e:
        raise EvalError(f"checkpoint {checkpoint!r}: {str(e).splitlines()[0]}") from None
    if tokenizer.vocab_size > cfg.vocab_size:
        raise EvalError(
            f"checkpoint {checkpoint!r}: tokenizer has {tokenizer.vocab_size} ids, "
            f"more than the model's vocab_size {cfg.vocab_size}"
        )
    return Model(cfg, params, tokenizer)


@dataclasses.dataclass(frozen=True)
class Response:
    text: str  # decoded, eos removed
    num_tokens: int  # generated tokens, eos included
    finish_reason: str


def generate_responses(
    model: Model,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingSettings,
    *,
    generate_fn: GenerateFn | None = None,
    mesh=None,
    seed: int | None = None,
) -> list[list[Response]]:
    """`sampling.num_samples` decoded responses per prompt (the sampler contract of docs/design.md)."""
    if generate_fn is None:
        from qwenlong_jax import sampling as sampling_lib

        generate_fn = sampling_lib.generate
    tok = model.tokenizer
    out = generate_fn(
        model.cfg,
        model.params,
        [list(p) for p in prompts],
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        num_samples=sampling.num_samples,
        eos_ids=tuple(tok.eos_ids),
        seed=sampling.seed if seed is None else seed,
        **({"mesh": mesh} if mesh is not None else {}),
    )
    if len(out) != len(prompts):
        raise ValueError(f"generate returned {len(out)} results for {len(prompts)} prompts")
    eos = set(tok.eos_ids)
    result = []
    for samples in out:
        rs = []
        for s in samples:
            ids = list(s.tokens)
            if ids and ids[-1] in eos:  # the eos token is not part of the answer text
                ids = ids[:-1]
            rs.append(Response(strip_eos(tok.decode(ids), tok.eos_text), len(s.tokens), s.finish_reason))
        result.append(rs)
    return result
