"""``BackboneDataModule``: Lightning glue around corpus -> tokenizer -> token store -> datasets.

Built from its one schema, ``DataConfig`` (``conf/data/*.yaml``), plus the model's ``seq_len``
and the run ``seed``. ``setup()`` is idempotent and everything expensive is cached under
``config.cache_dir`` (default ``~/.cache/backbone_lab``); ranks that start together wait on one
lock while the first builds the caches. Only ``train_dataloader`` is a Lightning hook; the
evaluation callback runs the evaluations itself with ``val_loader()`` /
``probe_eval_loader(kind)``.

Ranks: ``train_dataloader`` gives each rank its share of the one global stream (see
``ResumableSampler``: data parallelism = gradient accumulation); the eval loaders give each rank
a contiguous 1/W of every fixed set (the evaluation sums are all-reduced).

Resume: before ``fit`` the trainer calls ``set_start_step(global_step, accumulate)``; the
sampler then yields exactly the micro-batches an uninterrupted run would have seen next.
Lightning must run with ``use_distributed_sampler=False``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Subset

from .codewords import save_codewords, select_codewords
from .config import DataConfig
from .corpus import Corpus, load_corpus
from .errors import DataError
from .examples import ProbeEvalSet, ResumableSampler, TrainExamples, ValExamples, collate
from .probe import ProbeBank
from .token_store import TokenStore, build_token_store
from .tokenizer import TextTokenizer, load_or_train_bpe, load_pretrained_tokenizer, save_run_tokenizer

log = logging.getLogger(__name__)

PAPER_VOCAB = {"EleutherAI/gpt-neo-125M": 50257}  # PAPER_MAP §2.1: assert the paper's |V|


def default_cache_dir() -> Path:
    return Path(os.environ.get("BACKBONE_LAB_CACHE", Path.home() / ".cache" / "backbone_lab"))


@contextmanager
def cache_lock(cache_dir: Path):
    """Exclusive lock on the cache folder while one process builds corpora/tokenizers/stores."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".build.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def shard(n: int, rank: int, world_size: int) -> range:
    """Rank `rank`'s contiguous share of `n` items (`n` must be divisible by `world_size`)."""
    if n % world_size:
        raise DataError(f"{n} evaluation examples cannot be split evenly over {world_size} ranks")
    per = n // world_size
    return range(rank * per, (rank + 1) * per)


class BackboneDataModule(L.LightningDataModule):
    """Data for one run.

    Args:
        config: the ``data`` group's ``DataConfig``.
        seq_len: the model's context length (examples hold ``seq_len + 1`` tokens).
        seed: the run seed (training examples are a pure function of (seed, epoch, index)).
    """

    def __init__(self, config: DataConfig, seq_len: int, seed: int = 0):
        super().__init__()
        self.config = config
        self.seq_len, self.seed = int(seq_len), int(seed)
        self.micro_batch_size = config.micro_batch_size
        self.cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
        self.start_sample = 0  # local sample index the train stream starts at (resume)
        self.total_samples: int | None = None  # None = infinite stream
        self._ready = False

    # ------------------------------------------------------------------ build
    def setup(self, stage: str | None = None) -> None:
        """Build corpus, tokenizer, token stores, codewords and datasets (cached; idempotent)."""
        if self._ready:
            return
        t0 = time.perf_counter()
        c = self.config
        with cache_lock(self.cache_dir):
            self.corpus: Corpus = load_corpus(c, cache_dir=self.cache_dir)
            if c.tokenizer == "bpe":
                self.tokenizer: TextTokenizer = load_or_train_bpe(
                    self.corpus.train, c.vocab_size, self.cache_dir,
                    n_pseudo_words=c.n_codewords, corpus_sha=self.corpus.train_sha256)
            else:
                self.tokenizer = load_pretrained_tokenizer(c.tokenizer_name)
                want = PAPER_VOCAB.get(c.tokenizer_name)
                if want is not None and self.tokenizer.vocab_size != want:
                    raise DataError(f"{c.tokenizer_name} has |V|={self.tokenizer.vocab_size}, expected {want}")
            self.train_store: TokenStore = build_token_store(self.corpus.train, self.tokenizer, self.cache_dir,
                                                             self.corpus.train_sha256)
            self.val_store: TokenStore = build_token_store(self.corpus.val, self.tokenizer, self.cache_dir,
                                                           self.corpus.val_sha256)
        self.codewords: list[str] = select_codewords(self.tokenizer, c.n_codewords, c.codeword_seed, c.codeword_rule)
        self.bank = ProbeBank(self.tokenizer, self.codewords)
        eos = self.tokenizer.eos_id
        self.train_set = TrainExamples(self.train_store, self.seq_len, p_probe=c.p_probe, gap_train=c.gap_train,
                                       seed=self.seed, mask_padding=c.mask_padding, bank=self.bank, eos_id=eos)
        self.val_set = ValExamples(self.val_store, self.seq_len, eos, c.n_val, c.mask_padding, c.val_crop)
        self.probe_sets = {
            kind: ProbeEvalSet(kind, c.n_eval, self.bank, self.seq_len, eos, self.tokenizer.vocab_size,
                               gaps=gaps, eval_seed=c.eval_seed, mask_padding=c.mask_padding,
                               filler_range=c.filler_range, gap_policy=c.gap_policy)
            for kind, gaps in (("in", c.gap_train), ("ood", c.gap_ood))
        }
        (_, in_hi), (ood_lo, _) = self.probe_sets["in"].gap_range, self.probe_sets["ood"].gap_range
        self.gap_overlap = None
        if ood_lo <= in_hi:
            self.gap_overlap = (f"OOD eval gaps {list(self.probe_sets['ood'].gap_range)} overlap the ID gaps "
                                f"{list(self.probe_sets['in'].gap_range)} at seq_len={self.seq_len}: p_ood is not OOD")
            warnings.warn(self.gap_overlap, stacklevel=2)
        self._ready = True
        log.info("data ready in %.2fs: %s", time.perf_counter() - t0, self.summary())

    def _need(self):
        if not self._ready:
            raise RuntimeError("BackboneDataModule.setup() has not been called")

    # ------------------------------------------------------------------ info
    @property
    def vocab_size(self) -> int:
        """Vocabulary size the model must use (the tokenizer's actual size)."""
        self._need()
        return self.tokenizer.vocab_size

    @property
    def eos_id(self) -> int:
        self._need()
        return self.tokenizer.eos_id

    def summary(self) -> dict:
        """Plain-dict facts about the built data (for logs / run metadata)."""
        self._need()
        return {
            "source": self.config.source, "tokenizer": self.tokenizer.name, "vocab_size": self.tokenizer.vocab_size,
            "train_docs": self.train_store.n_docs, "train_tokens": self.train_store.n_tokens,
            "val_docs": self.val_store.n_docs, "n_codewords": len(self.codewords),
            "gap_in": list(self.probe_sets["in"].gap_range), "gap_ood": list(self.probe_sets["ood"].gap_range),
            "gap_adjustments": [s.adjustment for s in self.probe_sets.values() if s.adjustment]
            + ([self.gap_overlap] if self.gap_overlap else []),
        }

    def save_run_files(self, run_dir: str | Path) -> None:
        """Write ``<run_dir>/codewords.json`` and ``<run_dir>/tokenizer.json`` (the tokenizer of this
        run); raises DataError if a different list / tokenizer is already there."""
        self._need()
        save_codewords(run_dir, self.codewords)
        save_run_tokenizer(run_dir, self.tokenizer)

    # ------------------------------------------------------------------ resume
    def set_start_step(self, global_step: int, accumulate: int = 1, max_steps: int | None = None) -> None:
        """Start this rank's train stream after ``global_step`` optimizer steps (and stop after ``max_steps``)."""
        per_step = int(accumulate) * self.micro_batch_size  # local samples per optimizer step
        self.start_sample = int(global_step) * per_step
        self.total_samples = None if max_steps is None else max(0, int(max_steps) * per_step - self.start_sample)

    # ------------------------------------------------------------------ loaders
    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_sampler(self, rank: int = 0, world_size: int = 1) -> ResumableSampler:
        self._need()
        return ResumableSampler(len(self.train_set), self.seed, start=self.start_sample, total=self.total_samples,
                                micro_batch=self.micro_batch_size, rank=rank, world_size=world_size)

    def train_dataloader(self) -> DataLoader:
        """This rank's micro-batches of the resumable stream (content: a pure function of the keys)."""
        trainer = getattr(self, "trainer", None)
        on_gpu = trainer is not None and trainer.strategy.root_device.type == "cuda"
        workers = self.config.loader_workers(on_gpu)
        if workers > 0:  # workers never tokenise; silences the tokenizers fork warning
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        pin = on_gpu if self.config.pin_memory is None else self.config.pin_memory
        return DataLoader(self.train_set, batch_size=self.micro_batch_size, sampler=self.train_sampler(*self._rank_world()),
                          num_workers=workers, collate_fn=collate, persistent_workers=workers > 0, pin_memory=pin)

    def val_loader(self, batch_size: int | None = None, rank: int = 0, world_size: int = 1) -> DataLoader:
        """Rank `rank`'s share of the fixed LM validation examples (no shuffle)."""
        self._need()
        return DataLoader(Subset(self.val_set, shard(len(self.val_set), rank, world_size)),
                          batch_size=batch_size or self.config.batch_size_for_eval, shuffle=False, collate_fn=collate)

    def probe_eval_loader(self, kind: str, batch_size: int | None = None, rank: int = 0, world_size: int = 1) -> DataLoader:
        """Rank `rank`'s share of the fixed probe eval set ``kind`` in {"in", "ood"}."""
        self._need()
        if kind not in self.probe_sets:
            raise ValueError(f"kind must be 'in' or 'ood', got {kind!r}")
        ds = self.probe_sets[kind]
        return DataLoader(Subset(ds, shard(len(ds), rank, world_size)),
                          batch_size=batch_size or self.config.batch_size_for_eval, shuffle=False, collate_fn=collate)
