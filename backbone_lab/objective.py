"""The composite training objective and its schedules (paper Eq. 1, PAPER_MAP §3, §3.1).

    L = L_LM + λ(t) · L_probe

* L_LM: token-weighted mean cross-entropy over target positions that are neither probe-answer
  positions nor ignored (-100);
* L_probe: token-weighted mean cross-entropy over the probe-answer positions of the micro-batch
  (0 when the micro-batch holds no probe token).

Pure torch functions; the LightningModule and the diagnostics both call these. The per-token
cross-entropy is `cross_entropy.token_cross_entropy`: `F.cross_entropy` for fp32 logits (bit for
bit the paper's computation), chunked without a full fp32 copy for bf16 / fp16 logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from backbone_lab.cross_entropy import IGNORE_INDEX, token_cross_entropy
from backbone_lab.objective_config import (  # noqa: F401 - the schemas (and their checks) live there, torch-free
    ObjectiveConfig, ScheduleConfig, validate_lambda_schedule)


@dataclass
class LossParts:
    """One micro-batch's losses; every field is a device tensor (no host sync to build it)."""

    loss: torch.Tensor  # scalar, L_LM + λ L_probe
    lm: torch.Tensor  # scalar L_LM (nats/token)
    probe: torch.Tensor  # scalar L_probe (nats/token); 0 if no probe token
    n_lm: torch.Tensor  # int64 scalar: number of LM target tokens
    n_probe: torch.Tensor  # int64 scalar: number of probe target tokens


def _token_losses(logits, targets, probe_mask, chunked: bool = True):
    """Per-token CE (B, T) float32 and the LM / probe position masks (B, T) of PAPER_MAP §3.1.

    `chunked=False` always upcasts the logits (`F.cross_entropy(logits.float())`): the chunked
    autograd function has no forward-mode / vmap rule, which `torch.func` transforms need.
    """
    if chunked:
        token_ce = token_cross_entropy(logits, targets, IGNORE_INDEX)
    else:
        token_ce = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        ).view_as(targets)
    valid = targets != IGNORE_INDEX
    probe = probe_mask & valid
    return token_ce, valid & ~probe, probe


def composite_loss(
    logits: torch.Tensor, targets: torch.Tensor, probe_mask: torch.Tensor, lam: float
) -> LossParts:
    """Composite loss of one micro-batch (PAPER_MAP §3.1).

    logits (B, T, V) float; targets (B, T) int64 with -100 = ignore; probe_mask (B, T) bool.
    Token means divide by max(count, 1), so a micro-batch without probe tokens has L_probe = 0.
    """
    token_ce, lm, probe = _token_losses(logits, targets, probe_mask)
    n_lm, n_probe = lm.sum(), probe.sum()
    l_lm = token_ce.where(lm, 0.0).sum() / n_lm.clamp_min(1)
    l_probe = token_ce.where(probe, 0.0).sum() / n_probe.clamp_min(1)
    return LossParts(l_lm + lam * l_probe, l_lm, l_probe, n_lm, n_probe)


def per_sample_composite_loss(
    logits: torch.Tensor, targets: torch.Tensor, probe_mask: torch.Tensor, lam: float
) -> torch.Tensor:
    """Composite loss of each sequence on its own, shape (B,) (for per-sample Fisher, PAPER_MAP §5.10).

    Sequence i's loss is L_LM(i) + λ L_probe(i) with the token means taken within sequence i.
    Runs under `torch.func` (jvp / vmap, `diagnostics.fisher`), hence the plain fp32 upcast.
    """
    token_ce, lm, probe = _token_losses(logits, targets, probe_mask, chunked=False)
    l_lm = (token_ce * lm).sum(1) / lm.sum(1).clamp_min(1)
    l_probe = (token_ce * probe).sum(1) / probe.sum(1).clamp_min(1)
    return l_lm + lam * l_probe


def lambda_at(step: int, schedule: Sequence[Sequence[float]]) -> float:
    """λ in force at optimizer step `step` for a schedule [(start_step, λ), ...] sorted by start.

    The paper's schedule [(0, 2.0), (4000, 4.0)] gives λ(3999) = 2.0 and λ(4000) = 4.0 (PAPER_MAP §8).
    """
    if not schedule:
        raise ValueError("lambda schedule is empty; give at least one (start_step, lambda) pair")
    lam = float(schedule[0][1])
    for start, value in schedule:
        if step >= start:
            lam = float(value)
    return lam


def lr_at(step: int, peak_lr: float, warmup: int, total: int, floor: float = 0.1) -> float:
    """Learning rate at optimizer step `step` (1-based), PAPER_MAP §3.

    lr·t/warmup for t < warmup, then lr·max(½(1 + cos(π r)), floor) with
    r = min(1, (t − warmup)/(total − warmup)). The floor is a clamp, not a rescaled cosine.
    Paper values (lr 1e-3, warmup 1500, total 10000): lr(1) = 6.667e-7, lr(4000) = 8.013e-4.
    """
    if step < warmup:
        return peak_lr * step / warmup
    r = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak_lr * max(0.5 * (1.0 + math.cos(math.pi * r)), floor)
