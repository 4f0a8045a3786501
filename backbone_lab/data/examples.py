"""Map-style datasets (train / val / probe eval), the resumable sampler and ``collate``.

Every example is a pure function of its key and the config (PAPER_MAP §2.8, fixes W5): training
example ``(epoch, idx)`` uses ``np.random.default_rng([seed, epoch, idx])``; eval example i of
set ``kind`` uses ``np.random.default_rng([eval_seed, KIND_CODE[kind], i])``. Results therefore
do not depend on worker count, fetch order or resume. Items are dicts of tensors (seq_len,)
as in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .probe import (
    EVAL_PREFIX_RANGE, ProbeBank, filler_pool, fit_gap_range, make_eval_probe_example,
    make_lm_example, make_train_probe_example,
)
from .token_store import TokenStore

log = logging.getLogger(__name__)

KIND_CODE = {"in": 0, "ood": 1}


class TrainExamples(Dataset):
    """Training examples keyed by ``(epoch, idx)``: an LM crop of story ``idx`` or, with
    probability ``p_probe``, a probe example built on it (PAPER_MAP §2.2, §2.5).

    Per key the draws are: probe decision, then either the crop start or (codeword, template,
    gap, prefix_len). A plain ``int`` key means epoch 0.
    """

    def __init__(self, store: TokenStore, seq_len: int, *, codewords: Sequence[str] = (), tokenizer=None,
                 p_probe: float = 0.1, gap_train: Sequence[int] = (5, 30), seed: int = 0,
                 mask_padding: bool = True, bank: ProbeBank | None = None, eos_id: int | None = None):
        self.store, self.seq_len, self.p_probe = store, int(seq_len), float(p_probe)
        self.gap_train = (int(gap_train[0]), int(gap_train[1]))
        self.seed, self.mask_padding = int(seed), bool(mask_padding)
        if bank is None and self.p_probe > 0:
            bank = ProbeBank(tokenizer, codewords)
        self.bank = bank
        self.eos_id = int(eos_id if eos_id is not None else tokenizer.eos_id)

    def __len__(self) -> int:
        return self.store.n_docs

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        epoch, idx = (0, key) if isinstance(key, (int, np.integer)) else key
        rng = np.random.default_rng([self.seed, int(epoch), int(idx)])
        doc = self.store.doc(int(idx))
        if rng.random() < self.p_probe:
            ex = make_train_probe_example(doc, self.bank, rng, self.seq_len, self.eos_id,
                                          self.gap_train, self.mask_padding)
            if ex is not None:
                return ex
        return make_lm_example(doc, self.seq_len, self.eos_id, rng, self.mask_padding)


class ResumableSampler(Sampler):
    """Keys ``(epoch, idx)`` of one rank's share of a shuffled, never-ending stream.

    The global stream: sample ``g = 0, 1, ...`` has key ``epoch = g // n`` and
    ``idx = perm(seed, epoch)[g % n]`` with ``perm`` from ``np.random.default_rng([seed, epoch])``
    (batches may straddle epochs). It is cut into micro-batches of ``micro_batch`` consecutive
    samples; global micro-batch ``j`` holds samples ``[j·b, (j+1)·b)``.

    Data parallelism = gradient accumulation: of ``world_size`` ranks, rank ``r`` takes the
    micro-batches ``j = i·W + r`` (its local micro-batch ``i = 0, 1, ...``). An optimizer step of
    ``A`` accumulated micro-batches per rank therefore consumes the global micro-batches
    ``[s·A·W, (s+1)·A·W)`` — exactly what one process with ``accumulate = A·W`` consumes at step
    ``s``. With one rank the local stream is the global stream.

    ``start`` / ``total`` count samples of this rank's local stream: a run restarted after
    ``global_step`` optimizer steps continues exactly with ``start = global_step · A · b``.
    ``total = None`` is infinite (``len()`` then raises TypeError, which Lightning reads as an
    infinite loader).
    """

    def __init__(self, n_examples: int, seed: int = 0, start: int = 0, total: int | None = None,
                 micro_batch: int = 1, rank: int = 0, world_size: int = 1):
        if n_examples <= 0:
            raise ValueError("ResumableSampler needs n_examples >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n, self.seed, self.start = int(n_examples), int(seed), int(start)
        self.total = None if total is None else int(total)
        self.micro_batch, self.rank, self.world_size = int(micro_batch), int(rank), int(world_size)
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def perm(self, epoch: int) -> np.ndarray:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return self._perm_cache[1]

    def key(self, g: int) -> tuple[int, int]:
        """Key of global sample index ``g``."""
        epoch = g // self.n
        return epoch, int(self.perm(epoch)[g % self.n])

    def global_index(self, k: int) -> int:
        """Global sample index of this rank's local sample ``k``."""
        i, m = divmod(k, self.micro_batch)
        return (i * self.world_size + self.rank) * self.micro_batch + m

    def __iter__(self) -> Iterator[tuple[int, int]]:
        k = self.start
        end = None if self.total is None else self.start + self.total
        while end is None or k < end:
            yield self.key(self.global_index(k))
            k += 1

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("infinite ResumableSampler has no length (set total)")
        return self.total


class ValExamples(Dataset):
    """Fixed LM validation examples: the first ``seq_len+1`` tokens of each of the first ``n_val``
    documents (``crop="first"``), or an index-seeded random crop (``crop="random"``, seed
    ``default_rng([seed, idx])``). Identical at every evaluation (PAPER_MAP §2.7/§2.8)."""

    def __init__(self, store: TokenStore, seq_len: int, eos_id: int, n_val: int | None = None,
                 mask_padding: bool = True, crop: str = "first", seed: int = 0):
        if crop not in ("first", "random"):
            raise ValueError(f"crop must be 'first' or 'random', got {crop!r}")
        self.store, self.seq_len, self.eos_id = store, int(seq_len), int(eos_id)
        self.n = store.n_docs if n_val is None else min(int(n_val), store.n_docs)
        self.mask_padding, self.crop, self.seed = bool(mask_padding), crop, int(seed)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, int(i)]) if self.crop == "random" else None
        return make_lm_example(self.store.doc(int(i)), self.seq_len, self.eos_id, rng, self.mask_padding)


class ProbeEvalSet(Dataset):
    """Fixed probe evaluation set (PAPER_MAP §2.6): ``n`` examples with random-token fillers.

    Example i is a pure function of ``(eval_seed, kind, i)`` and the config (independent of the
    run seed). Default gaps: "in" [5, 30], "ood" [80, 200]. If the longest example would not fit
    ``seq_len+1`` tokens the gap range is adapted by ``gap_policy`` (see ``probe.fit_gap_range``;
    "scale" keeps the OOD/ID contrast at seq_len 128); ``self.gap_range`` holds the range used
    and ``self.adjustment`` the note logged at INFO (None if unchanged). Examples are built eagerly.
    """

    def __init__(self, kind: str, n: int, bank: ProbeBank, seq_len: int, eos_id: int, vocab_size: int,
                 gaps: Sequence[int] | None = None, eval_seed: int = 1000, mask_padding: bool = True,
                 filler_range: Sequence[int] = (100, 5000), gap_policy: str = "scale",
                 prefix_range: Sequence[int] = EVAL_PREFIX_RANGE):
        if kind not in KIND_CODE:
            raise ValueError(f"kind must be 'in' or 'ood', got {kind!r}")
        gaps = gaps if gaps is not None else ((5, 30) if kind == "in" else (80, 200))
        self.kind, self.n, self.eval_seed = kind, int(n), int(eval_seed)
        self.requested_gaps = (int(gaps[0]), int(gaps[1]))
        prefix_range = (int(prefix_range[0]), int(prefix_range[1]))
        self.gap_range, self.adjustment = fit_gap_range(self.requested_gaps, seq_len, bank, prefix_range[1], gap_policy)
        if self.adjustment:  # what gap_policy asked for, recorded in the run's data summary: news, not a warning
            log.info("probe eval set '%s': %s", kind, self.adjustment)
        pool = filler_pool(vocab_size, eos_id, sorted(bank.answer_token_ids), int(filler_range[0]), int(filler_range[1]))
        items = [
            make_eval_probe_example(bank, np.random.default_rng([self.eval_seed, KIND_CODE[kind], i]), seq_len,
                                    eos_id, self.gap_range, pool, prefix_range, mask_padding)
            for i in range(self.n)
        ]
        self.data = collate(items) if items else {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return {k: v[i] for k, v in self.data.items()}


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a list of example dicts into a batch dict of (B, T) tensors."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
