"""A pre-norm decoder, readable top to bottom (PAPER_MAP §1, paper §2.1), with litgpt-style families.

    tok_emb (+ pos_emb) -> n_layer x [x + Attn(Norm1(x)); x + MLP(Norm2(x))] -> Norm_f -> lm_head

`ModelConfig` is the one schema of the model: Hydra composes it from `conf/model/*.yaml`
(registered as the `model` group's schema) and `GPT(config)` takes it as is. A family differs
only in the names of its components:

| field        | GPT (the paper's, PAPER_MAP §1)  | Llama-style                    |
|--------------|-----------------------------|--------------------------------|
| `norm`       | `LayerNorm` (with bias)     | `RMSNorm`                      |
| `mlp`        | `GELU`: w_up -> GELU -> w_down | `SwiGLU`: w_down(silu(w_gate x) * w_up x) |
| `positions`  | `learned` (pos_emb table)   | `rope` (rotary q/k, no table)  |
| `tie_embeddings` | true (lm_head = tok_emb) | false                          |

Common to all: one fused `qkv` projection (no bias) split into q, k, v; attention through
`F.scaled_dot_product_attention`; no biases outside the norms; every Linear/Embedding weight
~ N(0, init_std^2), norm weights 1 and biases 0, no GPT-2 1/sqrt(2L) scaling (PAPER_MAP §1.1).
With the paper's fields the module tree, the order of construction and hence the initialisation
are exactly the authors' (51,045,888 parameters; `tests/test_golden_paper_model.py`).

**The model declares its trunk** (`parameter_roles`): the trunk of PAPER_MAP §1.3 is every weight
matrix (ndim >= 2) inside a block — for GPT the four matrices qkv, out_proj, w_up, w_down, for
Llama also w_gate. Snapshots, the analysis and the diagnostics read these roles; nothing
matches parameter names.

No Lightning import here: the model is plain PyTorch so analysis code can rebuild it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbone_lab.model_config import COMPONENT_CLASSES, ModelConfig  # the schema and its table live there (torch-free)


# ---------------------------------------------------------------------------- components
def component_class(field: str, name: str) -> type:
    """The class of this module that `model.<field>=<name>` names (`model_config.COMPONENT_CLASSES`,
    the one table: a new norm or MLP is its class here + one entry there)."""
    return globals()[COMPONENT_CLASSES[field][name]]


LayerNorm = nn.LayerNorm
RMSNorm = nn.RMSNorm


def make_norm(cfg: ModelConfig) -> nn.Module:
    return component_class("norm", cfg.norm)(cfg.d_model, eps=cfg.norm_eps)


def rope_tables(seq_len: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (seq_len, head_dim): angle t·base^(-2i/head_dim) for pair i, repeated
    for both halves (the "rotate half" convention of GPT-NeoX / Llama)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate q or k (B, H, T, hd) by position: x·cos + rotate_half(x)·sin."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    T = x.shape[-2]
    return (x * cos[:T] + rotated * sin[:T]).to(x.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # scale 1/sqrt(head_dim) by default
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.out_proj(y))


class GeluMLP(nn.Module):
    """w_up -> exact (erf) GELU -> w_down (GPT, PAPER_MAP §1)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w_down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.w_down(F.gelu(self.w_up(x))))


class SwiGLUMLP(nn.Module):
    """w_down(silu(w_gate x) * w_up x) (Llama)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w_up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w_down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.w_down(F.silu(self.w_gate(x)) * self.w_up(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = make_norm(cfg)
        self.mlp = component_class("mlp", cfg.mlp)(cfg)

    def forward(self, x: torch.Tensor, rope=None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), rope)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only transformer. `forward(idx (B, T) int64) -> logits (B, T, vocab_size)`."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        vocab = cfg.padded_vocab_size
        self.tok_emb = nn.Embedding(vocab, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model) if cfg.positions == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, vocab, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight  # one parameter, two names in state_dict
        if cfg.positions == "rope":
            cos, sin = rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Number of trainable scalars, tied weights counted once."""
        return sum(p.numel() for p in self.parameters())

    def parameter_roles(self) -> dict[str, tuple[int | None, bool]]:
        """`name -> (block index or None, in the trunk)` for every parameter, in canonical order
        (`named_parameters()`: module-definition order, a tied weight once). The trunk is every
        weight matrix inside a block (PAPER_MAP §1.3)."""
        block_of = {id(p): i for i, block in enumerate(self.blocks) for p in block.parameters()}
        return {name: (block_of.get(id(p)), id(p) in block_of and p.ndim >= 2)
                for name, p in self.named_parameters()}

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence length {T} exceeds the model's seq_len {self.cfg.seq_len}")
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=idx.device))
        rope = (self.rope_cos, self.rope_sin) if self.cfg.positions == "rope" else None
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, rope)
        logits = self.lm_head(self.ln_f(x))
        return logits if self.cfg.padded_vocab_size == self.cfg.vocab_size else logits[..., : self.cfg.vocab_size]


def expected_num_parameters(cfg: ModelConfig) -> int:
    """Closed-form parameter count of the GPT family (PAPER_MAP §1.2): V·d + seq·d + L·(4d² + 2·d·d_ff + 4d) + 2d."""
    d = cfg.d_model
    per_block = 3 * d * d + d * d + 2 * d * cfg.d_ff + 4 * d
    return cfg.padded_vocab_size * d + cfg.seq_len * d + cfg.n_layer * per_block + 2 * d
