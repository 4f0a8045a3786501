"""The authors' training loop, rebuilt from PAPER_MAP §1 and §3: the baseline of the GPU benchmark.

What makes it "authors' style" (each item is what the paper's runs did, per PAPER_MAP §3–§4):

* attention written out: scores = QKᵀ/√head_dim, a registered lower-triangular mask buffer
  (`attn.bias`, 1×1×T×T) filled with −inf above the diagonal, softmax, then ·V — no fused
  kernel, the T×T score matrix of every head lives in memory;
* fp32 throughout (no autocast, TF32 off: the caller sets the flags);
* `torch.optim.AdamW` unfused and without multi-tensor kernels (`foreach=False`), decay group
  chosen by name ("ln" / "bias" → no decay);
* a plain loop: the lr set by hand every step, L_LM and L_probe as means over boolean-indexed
  tokens, the logged loss read with `.item()` after every micro-batch (one host sync each),
  clipping at 1.0 after accumulation.

Same shapes, initialisation and objective as `backbone_lab.model.GPT` with the paper's fields,
so its tokens/s is directly comparable with our Lightning path on the same batches.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbone_lab.model import ModelConfig
from step_timer import synchronize


class NaiveCausalAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        mask = torch.tril(torch.ones(cfg.seq_len, cfg.seq_len)).view(1, 1, cfg.seq_len, cfg.seq_len)
        self.register_buffer("bias", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hd = C // self.n_head
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, hd).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        scores = scores.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        y = F.softmax(scores, dim=-1) @ v
        return self.out_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class GeluMLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w_down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.gelu(self.w_up(x)))


class AuthorsBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = NaiveCausalAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = GeluMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class AuthorsGPT(nn.Module):
    """Pre-norm GPT of PAPER_MAP §1.1: learned positions, tied head, N(0, 0.02²) init; parameter
    names as PAPER_MAP §1.3 lists them (the same as `backbone_lab.model.GPT`'s)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(AuthorsBlock(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def composite_loss_by_indexing(logits, targets, probe_mask, lam: float) -> torch.Tensor:
    """L_LM + λ L_probe (PAPER_MAP §3.1) as a plain loop writes it: means over boolean-indexed tokens,
    each guarded by a host-side `.any()`."""
    token_ce = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                               ignore_index=-100, reduction="none").view(targets.shape)
    lm_mask = ~probe_mask & (targets != -100)
    zero = torch.zeros((), device=logits.device)
    lm = token_ce[lm_mask].mean() if lm_mask.any() else zero
    probe = token_ce[probe_mask].mean() if probe_mask.any() else zero
    return lm + lam * probe


def warmup_cosine_lr(step: int, peak: float, warmup: int, total: int, floor: float = 0.1) -> float:
    """PAPER_MAP §3's schedule, computed by hand each step."""
    if step < warmup:
        return peak * step / warmup
    r = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * max(0.5 * (1.0 + math.cos(math.pi * r)), floor)


class AuthorsLoop:
    """Model + optimizer + plain loop; `run(warmup, steps)` returns (seconds of the timed steps,
    peak bytes on CUDA or None, warm-up seconds). The model lives on the CPU between runs."""

    def __init__(self, cfg: ModelConfig, batches: list[dict], accumulate: int, device: torch.device,
                 lam: float = 2.0, peak_lr: float = 1e-3):
        torch.manual_seed(0)
        self.model = AuthorsGPT(cfg)
        self.batches, self.accumulate, self.device = batches, accumulate, device
        self.lam, self.peak_lr = lam, peak_lr
        self.step = 0
        self.logged_loss = 0.0

    def _optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if ("ln" in name or "bias" in name) else decay).append(p)
        return torch.optim.AdamW([{"params": decay, "weight_decay": 0.5},
                                  {"params": no_decay, "weight_decay": 0.0}],
                                 lr=self.peak_lr, betas=(0.9, 0.95), eps=1e-8, foreach=False, fused=False)

    def _train_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.step += 1
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine_lr(self.step, self.peak_lr, 1500, 10_000)
        optimizer.zero_grad(set_to_none=True)
        for micro in range(self.accumulate):
            batch = self.batches[(self.step * self.accumulate + micro) % len(self.batches)]
            x, y, probe = (batch[k].to(self.device) for k in ("input_ids", "targets", "probe_mask"))
            loss = composite_loss_by_indexing(self.model(x), y, probe, self.lam) / self.accumulate
            loss.backward()
            self.logged_loss += loss.item() * self.accumulate
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        optimizer.step()

    def run(self, warmup: int, steps: int) -> tuple[float, int | None, float]:
        cuda = self.device.type == "cuda"
        start = time.perf_counter()
        self.model.to(self.device).train()
        optimizer = self._optimizer()
        for _ in range(warmup):
            self._train_step(optimizer)
        synchronize(self.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            self._train_step(optimizer)
        synchronize(self.device)
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(self.device) if cuda else None
        del optimizer
        self.model.cpu()
        return seconds, peak, t0 - start
