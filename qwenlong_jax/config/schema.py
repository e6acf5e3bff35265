"""The run configuration: an ml_collections.ConfigDict turned ONCE into frozen dataclasses.

Config files (configs/*.py) build a ConfigDict with `get_config(arg=None)`; `from_config_dict`
validates it (unknown keys with a did-you-mean, types, ranges) and returns a `Config`. Past
this point no code reads the ConfigDict; modules take only the fields they need.
Defaults follow QwenLong-L1's reference implementation (docs/recipe.md).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Literal

import ml_collections

from qwenlong_jax.config.load import ConfigError, at_least, build, positive
from qwenlong_jax.config.optim import OptimConfig, RLConfig
from qwenlong_jax.parallel.sharding import MeshConfig
from qwenlong_jax.rewards.judge import JudgeConfig  # noqa: F401  (the run config's `judge` section)

BadRecordPolicy = Literal["error", "skip"]


class PhaseKind(enum.StrEnum):
    """What a phase trains: SFT on traces, or RL (sample, reward, update). A str: "sft" == SFT."""

    SFT = "sft"
    RL = "rl"


@dataclasses.dataclass(frozen=True)
class RopeScalingSection:
    """YaRN RoPE scaling (models.RopeScaling). factor 0 = none: the size's or checkpoint's own."""

    factor: float = 0.0
    original_max_position_embeddings: int = 0
    beta_fast: float = 32.0
    beta_slow: float = 1.0

    def __post_init__(self):
        at_least("model.rope_scaling.factor", self.factor, 0)
        if self.factor and self.original_max_position_embeddings <= 0:
            raise ConfigError(
                "model.rope_scaling.original_max_position_embeddings must be > 0 when model.rope_scaling.factor is set"
            )


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """Which model and how to run it. `size` is a name from models.SIZES, or "hf" to read
    config.json from `hf_path`. `init_from` (HF dir) loads weights; empty = random init."""

    size: str = "tiny"
    hf_path: str = ""
    init_from: str = ""
    vocab_size: int = 0  # 0 = the size's own (or the tokenizer's, for "tiny")
    param_dtype: str = "float32"
    dtype: str = "float32"
    attention_impl: str = "xla"
    remat: str = "none"
    scan_layers: bool = True
    logits_chunk: int = 1024
    rope_scaling: RopeScalingSection = RopeScalingSection()


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
    """One phase of the curriculum. SFT trains on traces; RL samples, rewards and updates.
    Examples whose input length (tokens) lies in (min_input, max_input] belong to the phase."""

    name: str = "phase"
    order: int = 0  # phases run by increasing order (config files key phases by name)
    kind: PhaseKind = PhaseKind.RL
    max_input: int = 20_000
    max_output: int = 10_000
    min_input: int = 0
    steps: int = 0  # 0 = `epochs` passes over the phase's examples
    epochs: int = 1  # passes over the phase's examples when steps = 0 (the recipe's SFT: 3)
    batch: int = 128  # prompts per step
    lr: float = 0.0  # 0 = optim.lr
    retrospective: bool = True  # draw hard examples of earlier phases into this one
    micro_rows: int = 0  # SFT: packed rows per forward/backward, gradients accumulated (0 = all)

    def __post_init__(self):
        if self.kind not in tuple(PhaseKind):
            raise ConfigError(f"phases[{self.name}].kind: {self.kind!r} is not one of 'sft', 'rl'")
        object.__setattr__(self, "kind", PhaseKind(self.kind))  # "rl" given in code -> PhaseKind.RL
        at_least(f"phases[{self.name}].max_input", self.max_input, 1)
        at_least(f"phases[{self.name}].max_output", self.max_output, 1)
        at_least(f"phases[{self.name}].batch", self.batch, 1)
        at_least(f"phases[{self.name}].steps", self.steps, 0)
        at_least(f"phases[{self.name}].epochs", self.epochs, 1)
        if self.steps and self.epochs != 1:
            raise ConfigError(
                f"phases[{self.name}]: set steps or epochs, not both (steps={self.steps}, epochs={self.epochs})"
            )
        at_least(f"phases[{self.name}].micro_rows", self.micro_rows, 0)
        at_least(f"phases[{self.name}].min_input", self.min_input, 0)
        at_least(f"phases[{self.name}].lr", self.lr, 0)  # 0 = optim.lr
        if self.min_input >= self.max_input:
            raise ConfigError(f"phases[{self.name}]: min_input {self.min_input} must be < max_input {self.max_input}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training data: files (verl parquet/JSONL or plain JSONL), or synthetic long-document QA
    when `train_files` is empty. SFT examples need a `response`; `sft_files` default to the
    train files. Eval files are scored at the phases' lengths."""

    train_files: tuple[str, ...] = ()
    sft_files: tuple[str, ...] = ()
    eval_files: tuple[str, ...] = ()
    bad_records: BadRecordPolicy = "error"
    tokenizer: str = ""  # HF dir or sentencepiece .model; "" = the model's, else the embedded one
    shuffle_seed: int = 0  # changes the data order (and hard-pool draws) alone; 0 = set by `seed`
    # Synthetic data (used when train_files is empty): examples per phase, document lengths
    # (tokens) drawn from each phase's own range, held-out examples per eval length.
    synthetic_seed: int = 1234
    synthetic_per_phase: int = 256
    synthetic_families: tuple[str, ...] = ("lookup", "multihop")
    synthetic_attributes: int = 8
    eval_lengths: tuple[int, ...] = ()  # document tokens of the held-out sets
    eval_per_length: int = 32
    eval_max_new_tokens: int = 64

    def __post_init__(self):
        at_least("data.synthetic_per_phase", self.synthetic_per_phase, 1)
        at_least("data.eval_per_length", self.eval_per_length, 1)
        at_least("data.eval_max_new_tokens", self.eval_max_new_tokens, 1)
        at_least("data.synthetic_attributes", self.synthetic_attributes, 1)
        for n in self.eval_lengths:
            at_least("data.eval_lengths[...]", n, 1)


@dataclasses.dataclass(frozen=True)
class RetroConfig:
    """Difficulty-aware retrospective sampling (docs/recipe.md, "Pipeline" 3)."""

    hard_threshold: float = 0.0  # mean reward at or below this -> hard
    # Difficulty weights (1 / smoothed success rate, curriculum.py) clipped here; a never-solved
    # example weighs 2 + G x its visits (10 after one visit of G=8), so 64 keeps them apart.
    max_weight: float = 64.0
    hard_fraction: float = 0.25  # at most this share of a batch drawn from the hard pool

    def __post_init__(self):
        positive("retro.max_weight", self.max_weight)
        if not 0 <= self.hard_fraction <= 1:
            raise ConfigError(f"retro.hard_fraction must be in [0, 1], got {self.hard_fraction}")


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelSection = ModelSection()
    mesh: MeshConfig = MeshConfig()
    optim: OptimConfig = OptimConfig()
    rl: RLConfig = RLConfig()
    data: DataConfig = DataConfig()
    retro: RetroConfig = RetroConfig()
    judge: JudgeConfig = JudgeConfig()
    phases: tuple[PhaseConfig, ...] = ()
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    eval_every: int = 0  # 0 = at phase ends only
    export_hf: bool = True
    distributed: bool = False  # call jax.distributed.initialize() (multi-host)
    # Empty / 0 / -1: found by JAX's cluster detection (TPU pods, SLURM, Open MPI, Kubernetes).
    coordinator_address: str = ""  # "host:port" of process 0
    num_processes: int = 0
    process_id: int = -1
    log_all_processes: bool = False  # processes > 0 also write WORKDIR/process_<i>/metrics.jsonl

    def __post_init__(self):
        at_least("checkpoint_every", self.checkpoint_every, 1)
        at_least("keep_checkpoints", self.keep_checkpoints, 1)  # 0 would keep none: no resume
        at_least("eval_every", self.eval_every, 0)
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ConfigError(f"phases: names must be unique, got {names}")
        first: dict[int, str] = {}
        for p in self.phases:  # an order shared by two phases leaves their order to chance
            if p.order in first:
                raise ConfigError(
                    f"phases[{first[p.order]}] and phases[{p.name}] both have order={p.order}; "
                    "give each phase its own order (phases run by increasing order)"
                )
            first[p.order] = p.name


def from_config_dict(cd: ml_collections.ConfigDict | dict) -> Config:
    """Validate and freeze. `phases` is keyed by phase name in config files (so that
    `--config.phases.rl_long.steps=10` works); here it becomes a tuple sorted by `order`."""
    d = cd.to_dict() if isinstance(cd, ml_collections.ConfigDict) else dict(cd)
    phases = d.get("phases")
    if isinstance(phases, dict):
        items = []
        for name, p in phases.items():
            if not isinstance(p, dict):
                raise ConfigError(f"config.phases.{name}: expected a section, got {p!r}")
            items.append({**p, "name": p.get("name", name)})
        d["phases"] = sorted(items, key=lambda p: p.get("order", 0))
    return build("config", d, Config)
