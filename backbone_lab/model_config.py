"""`ModelConfig`, the schema of the `model` group (`conf/model/`), without torch: the CLI checks a
command line against it before torch is imported. The model itself is `backbone_lab.model.GPT`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional


COMPONENT_CLASSES: dict[str, dict[str, str]] = {
    "norm": {"LayerNorm": "LayerNorm", "RMSNorm": "RMSNorm"},
    "mlp": {"GELU": "GeluMLP", "SwiGLU": "SwiGLUMLP"},
}
"""The one table of a model family's components: `model.<field>` name -> the class of
`backbone_lab.model` that builds it (looked up there by `component_class`, litgpt's
`mlp_class_name` pattern). A new norm or MLP is its class in model.py + one entry here; names
only, so this module (and the CLI's check of a command line) stays torch-free."""

NORMS = tuple(COMPONENT_CLASSES["norm"])
MLPS = tuple(COMPONENT_CLASSES["mlp"])
POSITIONS = ("learned", "rope")
"""Position schemes (code paths of `GPT`, not classes)."""


@dataclass
class ModelConfig:
    """Shape and components of the decoder. Each field is one choice; see the module docstring."""

    name: str = "custom"
    """Label in reports, W&B and compare tables (each `conf/model/*.yaml` sets its own)."""
    n_layer: int = 8
    """Number of transformer blocks."""
    d_model: int = 512
    """Residual stream width."""
    n_head: int = 16
    """Attention heads (d_model must be divisible by it)."""
    d_ff: int = 2048
    """Hidden width of the MLP."""
    seq_len: int = 256
    """Context length in tokens (the position table's size for learned positions)."""
    vocab_size: Optional[int] = None
    """Vocabulary size; None = the tokenizer's (filled in by `with_vocab` at build time)."""
    dropout: float = 0.0
    """Dropout after embeddings, attention output and MLP (the paper trains without)."""
    norm: str = "LayerNorm"
    """Norm class: LayerNorm | RMSNorm."""
    mlp: str = "GELU"
    """MLP class: GELU (w_up, w_down) | SwiGLU (w_gate, w_up, w_down)."""
    positions: str = "learned"
    """Position encoding: learned (pos_emb table) | rope (rotary, on q and k)."""
    tie_embeddings: bool = True
    """lm_head shares tok_emb's weight (one parameter)."""
    norm_eps: float = 1e-5
    """Epsilon of every norm."""
    rope_base: float = 10000.0
    """RoPE base frequency (positions=rope only)."""
    init_std: float = 0.02
    """Standard deviation of every Linear/Embedding weight at initialisation."""
    pad_vocab_multiple: int = 1
    """Round the embedding/head rows up to a multiple of this (64 helps GPU matmuls); the extra
    logits are cut off in `forward`, so outputs keep `vocab_size` columns. 1 = no padding (the
    paper preset keeps 51,045,888 parameters)."""

    def __post_init__(self) -> None:
        for name in ("n_layer", "d_model", "n_head", "d_ff", "seq_len", "pad_vocab_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if self.vocab_size is not None and (not isinstance(self.vocab_size, int) or self.vocab_size <= 0):
            raise ValueError(f"model.vocab_size must be a positive integer or null, got {self.vocab_size!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by model.n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        for field, choices in (("norm", NORMS), ("mlp", MLPS), ("positions", POSITIONS)):
            if getattr(self, field) not in choices:
                raise ValueError(f"model.{field}={getattr(self, field)!r} is not one of {' | '.join(choices)}")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"model.positions=rope needs an even head size, got d_model/n_head = {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_multiple
        return -(-self._vocab() // m) * m

    def _vocab(self) -> int:
        if self.vocab_size is None:
            raise ValueError("model.vocab_size is not set: build the model with config.with_vocab(tokenizer size)")
        return self.vocab_size

    def with_vocab(self, tokenizer_vocab: int) -> "ModelConfig":
        """This config with `vocab_size` filled in from the tokenizer (kept when set and large enough)."""
        if self.vocab_size is not None and self.vocab_size < tokenizer_vocab:
            raise ValueError(f"model.vocab_size={self.vocab_size} is smaller than the tokenizer's {tokenizer_vocab}")
        return dataclasses.replace(self, vocab_size=self.vocab_size or int(tokenizer_vocab))
