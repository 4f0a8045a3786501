"""A pre-norm GPT decoder, readable top to bottom (SPEC §1, paper §2.1).

    tok_emb + pos_emb -> n_layer x [x + Attn(LN1(x)); x + MLP(LN2(x))] -> ln_f -> lm_head

* one fused `qkv` projection (no bias), split into q, k, v in that order;
  attention through `F.scaled_dot_product_attention` (flash / memory-efficient kernels on GPU);
* MLP `w_up` -> exact (erf) GELU -> `w_down`, no biases anywhere except LayerNorm;
* `lm_head.weight` is tied to `tok_emb.weight`;
* every Linear/Embedding weight ~ N(0, 0.02^2), LayerNorm weight 1 and bias 0, no GPT-2
  1/sqrt(2L) scaling of residual projections (SPEC §1.1).

No Lightning import here: the model is plain PyTorch so analysis code can rebuild it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    """Shape of the decoder. `seq_len` is the context length in tokens."""

    vocab_size: int = 50257  # GPT-2 / GPT-Neo byte-level BPE (the paper's tokenizer)
    n_layer: int = 8
    d_model: int = 512
    n_head: int = 16
    d_ff: int = 2048
    seq_len: int = 256
    dropout: float = 0.0  # the paper trains without dropout

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "d_model", "n_head", "d_ff", "seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_head:
            raise ValueError(
                f"GPTConfig: d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


# Named presets (vocab_size is filled in from the tokenizer at build time when it is None).
PRESETS: dict[str, dict] = {
    # CPU-sized default: trains in about a minute on 2 cores.
    "tiny": dict(n_layer=2, d_model=64, n_head=4, d_ff=256, seq_len=128),
    # The reference repo's default "GPT-small" (~16M parameters with the GPT-2 vocabulary).
    "small": dict(n_layer=4, d_model=256, n_head=8, d_ff=1024, seq_len=256),
    # The paper's model: 51,045,888 parameters with vocab 50,257 (SPEC §1.2).
    "paper": dict(n_layer=8, d_model=512, n_head=16, d_ff=2048, seq_len=256),
}


def preset(name: str, **overrides) -> GPTConfig:
    """GPTConfig for a named preset (`tiny`, `small`, `paper`), with optional overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], **overrides})


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # scale 1/sqrt(head_dim) by default
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.out_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.w_up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w_down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.w_down(F.gelu(self.w_up(x))))  # exact erf GELU


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only transformer. `forward(idx (B, T) int64) -> logits (B, T, vocab) float`."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one parameter, two names in state_dict
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Number of trainable scalars, tied weights counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence length {T} exceeds the model's seq_len {self.cfg.seq_len}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def config_dict(self) -> dict:
        return asdict(self.cfg)


def expected_num_parameters(cfg: GPTConfig) -> int:
    """Closed-form parameter count (SPEC §1.2): V·d + seq·d + L·(4d² + 2·d·d_ff + 4d) + 2d."""
    d = cfg.d_model
    per_block = 3 * d * d + d * d + 2 * d * cfg.d_ff + 4 * d
    return cfg.vocab_size * d + cfg.seq_len * d + cfg.n_layer * per_block + 2 * d

