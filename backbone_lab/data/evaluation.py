"""Evaluation passes over the fixed sets (SPEC §2.7), one forward pass per batch (fixes W14).

``model(input_ids)`` must return logits (B, T, V) (a tuple/list: its first element). Both
functions run under ``torch.no_grad()`` with ``model.eval()`` and restore the previous mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids)
    return out[0] if isinstance(out, (tuple, list)) else out


def _per_token_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T) cross-entropy in float32, 0 where ``targets == -100``."""
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V).float(), targets.reshape(B * T),
                           ignore_index=-100, reduction="none").view(B, T)


@torch.no_grad()
def evaluate_probe(model: torch.nn.Module, loader, device) -> dict[str, float]:
    """Exact-match accuracy and NLLs of a probe eval set.

    Returns ``{"acc", "nll", "lm_nll", "n"}``:
    - acc: fraction of examples (with >= 1 masked position) whose argmax is correct at *all*
      ``probe_mask`` positions (p_in / p_ood);
    - nll: token-weighted mean CE over all masked positions of the set (nll_in / nll_ood);
    - lm_nll: token-weighted mean CE over non-masked, non-ignored positions (lm_ood);
    - n: number of examples with >= 1 masked position.
    """
    was_training = model.training
    model.eval()
    correct = n = 0
    nll_sum = lm_sum = 0.0
    nll_cnt = lm_cnt = 0
    try:
        for batch in loader:
            x = batch["input_ids"].to(device)
            y = batch["targets"].to(device)
            m = batch["probe_mask"].to(device)
            logits = _logits(model, x)
            ce = _per_token_ce(logits, y)
            hit = (logits.argmax(-1) == y) | ~m  # (B, T): True where fine or unmasked
            has = m.any(1)
            correct += int((hit.all(1) & has).sum())
            n += int(has.sum())
            nll_sum += float(ce[m].double().sum())
            nll_cnt += int(m.sum())
            lm = ~m & (y != -100)
            lm_sum += float(ce[lm].double().sum())
            lm_cnt += int(lm.sum())
    finally:
        model.train(was_training)
    nan = float("nan")
    return {"acc": correct / n if n else nan, "nll": nll_sum / nll_cnt if nll_cnt else nan,
            "lm_nll": lm_sum / lm_cnt if lm_cnt else nan, "n": n}


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, loader, device, max_batches: int | None = None) -> float:
    """Token-weighted mean CE over all non-ignored targets (``!= -100``) of ``loader``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for b, batch in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            y = batch["targets"].to(device)
            ce = _per_token_ce(_logits(model, batch["input_ids"].to(device)), y)
            keep = y != -100
            total += float(ce[keep].double().sum())
            count += int(keep.sum())
    finally:
        model.train(was_training)
    return total / count if count else float("nan")
