"""Evaluation passes over the fixed sets (PAPER_MAP §2.7), one forward pass per batch (fixes W14).

Each pass accumulates *sums* in one float64 tensor on the model's device (no host sync per
batch); `finish_*` turns sums into the reported means. Sums add up across ranks, so a
data-parallel run evaluates 1/W of each set on every rank, all-reduces the sums once and gets
the single-process numbers (PAPER_MAP §2.7 semantics: token-weighted means).

``model(input_ids)`` must return logits (B, T, V) (a tuple/list: its first element). Passes run
under ``torch.no_grad()`` with ``model.eval()`` and restore the previous mode.
"""

from __future__ import annotations

import torch

from backbone_lab.cross_entropy import token_cross_entropy

PROBE_SUMS = ("correct", "n", "nll_sum", "nll_count", "lm_sum", "lm_count")
LM_SUMS = ("ce_sum", "count")


def _logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    out = model(input_ids)
    return out[0] if isinstance(out, (tuple, list)) else out


def per_token_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T) cross-entropy in float32, 0 where ``targets == -100``, from logits (B, T, V): fp32
    logits as `F.cross_entropy`, bf16 / fp16 ones chunked without an fp32 copy of them."""
    return token_cross_entropy(logits, targets, ignore_index=-100)


@torch.no_grad()
def probe_sums(model: torch.nn.Module, loader, device) -> torch.Tensor:
    """Sums over a probe eval set, a float64 tensor in the order of `PROBE_SUMS`:
    correct (examples whose argmax is right at *all* probe positions), n (examples with >= 1
    probe position), nll_sum / nll_count over probe positions, lm_sum / lm_count over the other
    non-ignored positions."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(PROBE_SUMS), dtype=torch.float64, device=device)
    try:
        for batch in loader:
            x = batch["input_ids"].to(device)
            y = batch["targets"].to(device)
            m = batch["probe_mask"].to(device)
            logits = _logits(model, x)
            ce = per_token_ce(logits, y).double()
            hit = (logits.argmax(-1) == y) | ~m  # (B, T): True where right or not a probe position
            has = m.any(1)
            lm = ~m & (y != -100)
            sums += torch.stack([(hit.all(1) & has).sum(), has.sum(), ce.where(m, 0.0).sum(), m.sum(),
                                 ce.where(lm, 0.0).sum(), lm.sum()]).double()
    finally:
        model.train(was_training)
    return sums


def finish_probe(sums) -> dict[str, float]:
    """``{"acc", "nll", "lm_nll", "n"}`` from `probe_sums` (NaN where a count is 0):
    acc = p_in / p_ood (exact match), nll = nll_in / nll_ood, lm_nll = lm_ood."""
    correct, n, nll_sum, nll_cnt, lm_sum, lm_cnt = (float(v) for v in sums)
    nan = float("nan")
    return {"acc": correct / n if n else nan, "nll": nll_sum / nll_cnt if nll_cnt else nan,
            "lm_nll": lm_sum / lm_cnt if lm_cnt else nan, "n": int(n)}


@torch.no_grad()
def lm_sums(model: torch.nn.Module, loader, device, max_batches: int | None = None) -> torch.Tensor:
    """(sum of CE, count) over all non-ignored targets (``!= -100``), float64 on `device`."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(LM_SUMS), dtype=torch.float64, device=device)
    try:
        for b, batch in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            y = batch["targets"].to(device)
            ce = per_token_ce(_logits(model, batch["input_ids"].to(device)), y).double()
            keep = y != -100
            sums += torch.stack([ce.where(keep, 0.0).sum(), keep.sum()]).double()
    finally:
        model.train(was_training)
    return sums


def finish_lm(sums) -> float:
    ce_sum, count = (float(v) for v in sums)
    return ce_sum / count if count else float("nan")


def evaluate_probe(model: torch.nn.Module, loader, device) -> dict[str, float]:
    """Exact-match accuracy and NLLs of a probe eval set on one process (see `finish_probe`).

    Public API: evaluate any model (a notebook, a loaded checkpoint) outside the training loop;
    the training loop uses the rank-aware `probe_sums` + all-reduce + `finish_probe` instead.
    """
    return finish_probe(probe_sums(model, loader, device).tolist())


def evaluate_lm(model: torch.nn.Module, loader, device, max_batches: int | None = None) -> float:
    """Token-weighted mean CE over all non-ignored targets of ``loader`` on one process.

    Public API, the LM counterpart of `evaluate_probe`.
    """
    return finish_lm(lm_sums(model, loader, device, max_batches).tolist())
