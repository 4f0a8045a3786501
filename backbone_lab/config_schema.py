"""Structured-config schemas: typos and wrong types fail when Hydra composes the config.

Each schema is registered in Hydra's ConfigStore as the config `schema` of its group and pulled
into each of the group's YAML files through their defaults list (`defaults: [schema, _self_]`,
Hydra's "structured config schema" pattern), so
`python -m backbone_lab model.d_modle=3` or `train.max_steps=abc` stops at compose time with a
one-line message. Nodes that are instantiated from a `_target_` (optimizer, loggers, callbacks)
stay free-form: their keys are checked by the class they build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf


@dataclass
class ModelSchema:
    """GPT shape (SPEC §1). `vocab_size: null` = take it from the tokenizer."""

    preset: str = "tiny"
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 4
    d_ff: int = 256
    seq_len: int = 128
    vocab_size: Optional[int] = None
    dropout: float = 0.0


@dataclass
class DataSchema:
    """Corpus, tokenizer and probe task (SPEC §2). See backbone_lab/data/datamodule.py."""

    source: str = "synthetic"  # synthetic | local | tinystories
    train_files: list[str] = field(default_factory=list)
    val_files: list[str] = field(default_factory=list)
    n_train_stories: int = 8000
    n_val_stories: int = 400
    synthetic_seed: int = 1234
    tokenizer: str = "bpe"  # bpe (trained on the corpus) | pretrained
    tokenizer_name: str = "EleutherAI/gpt-neo-125M"
    vocab_size: int = 512
    micro_batch_size: int = 32
    num_workers: int = 0
    p_probe: float = 0.1
    gap_train: list[int] = field(default_factory=lambda: [5, 30])
    gap_ood: list[int] = field(default_factory=lambda: [80, 200])
    n_codewords: int = 64
    codeword_seed: int = 42
    codeword_rule: str = "ours"  # ours | legacy: the authors' pool rule, made deterministic (SPEC §2.3)
    eval_seed: int = 1000
    n_eval: int = 256
    n_val: int = 256
    mask_padding: bool = True
    max_train_texts: Optional[int] = None
    max_val_texts: Optional[int] = None
    cache_dir: Optional[str] = None


@dataclass
class TrainSchema:
    """Optimisation loop (SPEC §3)."""

    max_steps: int = 1000
    accumulate: int = 1
    grad_clip: float = 1.0
    eval_every: int = 100
    ckpt_every: int = 250
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: Any = 1
    deterministic: bool = True
    compile: bool = False
    # Stop cleanly (run marked diverged) when the loss is non-finite or exceeds this value.
    divergence_loss: Optional[float] = None
    log_every: int = 10


@dataclass
class ScheduleSchema:
    """Warmup + cosine with a floor (SPEC §3). `total: null` = train.max_steps."""

    name: str = "warmup_cosine_floor"
    warmup: int = 100
    total: Optional[int] = None
    floor: float = 0.1


@dataclass
class ObjectiveSchema:
    """L = L_LM + λ(t) L_probe; `lambda_schedule` = [[start_step, λ], ...] (paper Eq. 1)."""

    lambda_schedule: list[Any] = field(default_factory=lambda: [[0, 2.0]])  # checked by objective.validate_lambda_schedule


@dataclass
class SnapshotSchema:
    """Trunk snapshot cadence (SPEC §3.2, §4.1-4.2): steps 0, 1, every `every` steps, plus
    `dense` ranges [[from, to, every], ...]; `extra_steps` added verbatim."""

    enabled: bool = True
    every: int = 25
    dense: list[list[int]] = field(default_factory=list)
    extra_steps: list[int] = field(default_factory=list)
    include_init: bool = True
    include_step1: bool = True
    subset: str = "trunk"  # trunk | blocks_with_ln | full
    dtype: str = "float32"  # float32 | float16 | bfloat16


def register_configs() -> None:
    """Register the schemas with Hydra (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(group="model", name="schema", node=ModelSchema)
    cs.store(group="data", name="schema", node=DataSchema)
    cs.store(group="train", name="schema", node=TrainSchema)
    cs.store(group="schedule", name="schema", node=ScheduleSchema)
    cs.store(group="objective", name="schema", node=ObjectiveSchema)
    cs.store(group="snapshots", name="schema", node=SnapshotSchema)


def plain_container(value):
    """OmegaConf nodes -> plain Python containers (resolved); anything else unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def drop_dotted_keys(data: dict, keys) -> dict:
    """Remove top-level (`name`) or one-level dotted (`group.name`) keys from a plain dict, in place."""
    for key in keys:
        node, *rest = key.split(".")
        if rest and isinstance(data.get(node), dict):
            data[node].pop(rest[0], None)
        elif not rest:
            data.pop(node, None)
    return data
