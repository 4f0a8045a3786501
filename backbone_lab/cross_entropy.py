"""Per-token cross-entropy of half-precision logits without a full float32 copy of them.

Under bf16 / fp16 mixed precision the language-model head returns logits (N, V) in half
precision. `F.cross_entropy(logits.float(), ...)` first materialises an fp32 copy of all of them
and then saves an fp32 log-softmax of the same size for backward: at the paper's batch
(N = 64 × 256 tokens, V = 50,257) that is 3.3 GB each. `chunked_cross_entropy` walks the rows in
chunks instead: each chunk is upcast to fp32 on its own, its logsumexp and target logit are
taken in fp32, and only the half-precision logits (already alive) plus one fp32 logsumexp per
row (N × 4 bytes) are kept for backward, which recomputes the softmax chunk by chunk. The
largest temporary is one fp32 chunk (`chunk_rows` × V × 4 bytes), whatever N is.

The numbers are those of `F.cross_entropy` on the fp32 upcast (same fp32 arithmetic per row, up
to the order of a few roundings); `tests/test_gpu_path.py` checks loss and gradient, and the
peak memory, against it. Pure torch, any device, no host synchronisation.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

IGNORE_INDEX = -100
CHUNK_BYTES = 64 * 2**20
"""Size of the one fp32 temporary (a chunk of rows) when `chunk_rows` is not given: 64 MiB,
i.e. 333 rows of the 50,257-token vocabulary."""


def default_chunk_rows(vocab: int) -> int:
    """Rows per chunk so that one fp32 chunk (rows × vocab × 4 bytes) is about `CHUNK_BYTES`."""
    return max(1, CHUNK_BYTES // (4 * max(1, int(vocab))))


def _target_columns(targets: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid (c,) bool, column (c, 1) int64): ignored rows point at column 0 (masked later)."""
    valid = targets != ignore_index
    return valid, torch.where(valid, targets, 0).unsqueeze(1)


class ChunkedCrossEntropy(torch.autograd.Function):
    """Autograd function behind `chunked_cross_entropy` (see there for shapes)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, chunk_rows: int) -> torch.Tensor:
        n = logits.shape[0]
        loss = torch.empty(n, dtype=torch.float32, device=logits.device)
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        with torch.autocast(logits.device.type, enabled=False):
            for lo in range(0, n, chunk_rows):
                hi = min(lo + chunk_rows, n)
                block = logits[lo:hi].to(torch.float32, copy=True)  # the one fp32 chunk (c, V)
                valid, column = _target_columns(targets[lo:hi], ignore_index)
                picked = block.gather(1, column).squeeze(1)
                # logsumexp as torch computes it (shift by the row max, 0 for infinite maxima),
                # in place in the chunk so no second chunk-sized temporary exists
                shift = block.amax(dim=1)
                shift.masked_fill_(shift.isinf(), 0.0)
                total = block.sub_(shift[:, None]).exp_().sum(dim=1)
                del block
                lse[lo:hi] = total.log_().add_(shift)
                loss[lo:hi] = torch.where(valid, lse[lo:hi] - picked, 0.0)
        ctx.save_for_backward(logits, targets, lse)
        ctx.ignore_index, ctx.chunk_rows = ignore_index, chunk_rows
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        n = logits.shape[0]
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        with torch.autocast(logits.device.type, enabled=False):
            for lo in range(0, n, ctx.chunk_rows):
                hi = min(lo + ctx.chunk_rows, n)
                valid, column = _target_columns(targets[lo:hi], ctx.ignore_index)
                # d loss_i / d logits_ij = softmax_ij - [j == t_i]; 0 for ignored rows
                probs = logits[lo:hi].to(torch.float32, copy=True).sub_(lse[lo:hi, None]).exp_()
                probs.scatter_add_(1, column, torch.full_like(column, -1, dtype=probs.dtype))
                scale = torch.where(valid, grad_loss[lo:hi].float(), 0.0)
                grad[lo:hi] = probs.mul_(scale[:, None])
                del probs  # before the next chunk is allocated
        return grad, None, None, None


def chunked_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX, chunk_rows: int | None = None
) -> torch.Tensor:
    """Per-row cross-entropy, fp32 arithmetic, no full-size fp32 tensor.

    Args:
        logits: (N, V) float logits of any dtype (meant for bf16 / fp16); may be a strided view.
        targets: (N,) int64 class indices in [0, V), or `ignore_index`.
        ignore_index: target value whose rows get loss 0 and gradient 0 (-100, as torch).
        chunk_rows: rows upcast at a time; None = `default_chunk_rows(V)`.

    Returns: (N,) float32 loss in nats, `F.cross_entropy(logits.float(), targets,
    ignore_index=ignore_index, reduction="none")` up to float32 rounding. The gradient flows
    back to `logits` in its own dtype.
    """
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"chunked_cross_entropy takes logits (N, V) and targets (N,), got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    rows = int(chunk_rows) if chunk_rows is not None else default_chunk_rows(logits.shape[1])
    if rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return ChunkedCrossEntropy.apply(logits, targets, int(ignore_index), rows)


def uses_chunked_path(logits: torch.Tensor) -> bool:
    """Whether `token_cross_entropy` takes the chunked path: half-precision logits only, so fp32
    (the paper's precision, every golden test) keeps `F.cross_entropy` bit for bit."""
    return logits.dtype in (torch.bfloat16, torch.float16)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-token cross-entropy (..., V), (...) -> (...) float32, 0 where `targets == ignore_index`.

    Half-precision logits: `chunked_cross_entropy` (no fp32 copy of the logits). Any other dtype:
    `F.cross_entropy(logits.float(), ...)`, exactly the computation of the fp32 runs.
    """
    flat_logits, flat_targets = logits.flatten(0, -2), targets.flatten()
    if uses_chunked_path(logits):
        ce = chunked_cross_entropy(flat_logits, flat_targets, ignore_index)
    else:
        ce = torch.nn.functional.cross_entropy(flat_logits.float(), flat_targets, ignore_index=ignore_index,
                                               reduction="none")
    return ce.view(targets.shape)
