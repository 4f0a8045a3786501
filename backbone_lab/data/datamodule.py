"""``BackboneDataModule``: Lightning glue around corpus -> tokenizer -> token store -> datasets.

Built from plain arguments (the Hydra ``data`` node plus ``seq_len`` and ``seed``). ``setup()``
is idempotent and everything expensive is cached under ``cache_dir`` (default
``~/.cache/backbone_lab``). Only ``train_dataloader`` is a Lightning hook; the trainer runs the
evaluations itself with ``val_loader()`` / ``probe_eval_loader(kind)`` and
``evaluation.evaluate_lm`` / ``evaluate_probe``.

Resume: before ``fit`` the trainer calls ``set_start_step(global_step, accumulate, max_steps)``;
the sampler then yields exactly the micro-batches an uninterrupted run would have seen next.
With a custom sampler, Lightning should be run with ``use_distributed_sampler=False``.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Sequence

import lightning as L
from torch.utils.data import DataLoader

from .codewords import CODEWORD_RULES, save_codewords, select_codewords
from .corpus import Corpus, load_corpus
from .errors import DataError
from .examples import ProbeEvalSet, ResumableSampler, TrainExamples, ValExamples, collate
from .probe import ProbeBank
from .token_store import TokenStore, build_token_store
from .tokenizer import TextTokenizer, load_or_train_bpe, load_pretrained_tokenizer, save_run_tokenizer

log = logging.getLogger(__name__)

PAPER_VOCAB = {"EleutherAI/gpt-neo-125M": 50257}  # SPEC §2.1: assert the paper's |V|


def default_cache_dir() -> Path:
    return Path(os.environ.get("BACKBONE_LAB_CACHE", Path.home() / ".cache" / "backbone_lab"))


class BackboneDataModule(L.LightningDataModule):
    """Data for one run. Arguments mirror the ``data`` config group (SPEC §2, §9).

    Extra knobs beyond the config schema (defaults are fine): ``val_files`` holdout
    ``val_fraction``, ``text_field`` for JSON, ``eval_batch_size``, ``filler_range`` and
    ``gap_policy`` for the eval probes (see ``ProbeEvalSet``), ``val_crop``.
    """

    def __init__(
        self,
        source: str = "synthetic",
        train_files: Sequence[str] | None = None,
        val_files: Sequence[str] | None = None,
        n_train_stories: int = 8000,
        n_val_stories: int = 400,
        synthetic_seed: int = 1234,
        tokenizer: str = "bpe",
        tokenizer_name: str = "EleutherAI/gpt-neo-125M",
        vocab_size: int = 512,
        seq_len: int = 128,
        micro_batch_size: int = 32,
        num_workers: int = 0,
        p_probe: float = 0.1,
        gap_train: Sequence[int] = (5, 30),
        gap_ood: Sequence[int] = (80, 200),
        n_codewords: int = 64,
        codeword_seed: int = 42,
        codeword_rule: str = "ours",
        eval_seed: int = 1000,
        n_eval: int = 256,
        n_val: int = 256,
        mask_padding: bool = True,
        max_train_texts: int | None = None,
        max_val_texts: int | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
        *,
        val_fraction: float = 0.05,
        text_field: str = "text",
        eval_batch_size: int | None = None,
        filler_range: Sequence[int] = (100, 5000),
        gap_policy: str = "scale",
        val_crop: str = "first",
    ):
        super().__init__()
        if tokenizer not in ("bpe", "pretrained"):
            raise DataError(f"unknown data.tokenizer={tokenizer!r}; use bpe | pretrained")
        if codeword_rule not in CODEWORD_RULES:
            raise DataError(f"unknown data.codeword_rule={codeword_rule!r}; use {' | '.join(CODEWORD_RULES)}")
        self.source, self.train_files, self.val_files = source, list(train_files or []), list(val_files or [])
        self.n_train_stories, self.n_val_stories, self.synthetic_seed = n_train_stories, n_val_stories, synthetic_seed
        self.tokenizer_kind, self.tokenizer_name, self.requested_vocab_size = tokenizer, tokenizer_name, vocab_size
        self.seq_len, self.micro_batch_size, self.num_workers = int(seq_len), int(micro_batch_size), int(num_workers)
        self.p_probe, self.gap_train, self.gap_ood = float(p_probe), tuple(gap_train), tuple(gap_ood)
        self.n_codewords, self.codeword_seed, self.eval_seed = int(n_codewords), int(codeword_seed), int(eval_seed)
        self.codeword_rule = codeword_rule  # ours | legacy (SPEC §2.3, codewords.py)
        self.n_eval, self.n_val, self.mask_padding = int(n_eval), int(n_val), bool(mask_padding)
        self.max_train_texts, self.max_val_texts = max_train_texts, max_val_texts
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.seed = int(seed)
        self.val_fraction, self.text_field = val_fraction, text_field
        self.eval_batch_size = int(eval_batch_size or micro_batch_size)
        self.filler_range, self.gap_policy, self.val_crop = tuple(filler_range), gap_policy, val_crop
        self.start_sample = 0  # global sample index the train stream starts at (resume)
        self.total_samples: int | None = None  # None = infinite stream
        self._ready = False

    # ------------------------------------------------------------------ build
    def prepare_data(self) -> None:
        self.setup()

    def prepare(self) -> None:
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        """Build corpus, tokenizer, token stores, codewords and datasets (cached; idempotent)."""
        if self._ready:
            return
        t0 = time.perf_counter()
        self.corpus: Corpus = load_corpus(
            self.source, train_files=self.train_files, val_files=self.val_files,
            n_train_stories=self.n_train_stories, n_val_stories=self.n_val_stories,
            synthetic_seed=self.synthetic_seed, max_train_texts=self.max_train_texts,
            max_val_texts=self.max_val_texts, val_fraction=self.val_fraction,
            text_field=self.text_field, cache_dir=self.cache_dir,
        )
        if self.tokenizer_kind == "bpe":
            self.tokenizer: TextTokenizer = load_or_train_bpe(
                self.corpus.train, self.requested_vocab_size, self.cache_dir,
                n_pseudo_words=self.n_codewords, corpus_sha=self.corpus.train_sha256)
        else:
            self.tokenizer = load_pretrained_tokenizer(self.tokenizer_name)
            want = PAPER_VOCAB.get(self.tokenizer_name)
            if want is not None and self.tokenizer.vocab_size != want:
                raise DataError(f"{self.tokenizer_name} has |V|={self.tokenizer.vocab_size}, expected {want}")
        self.train_store: TokenStore = build_token_store(self.corpus.train, self.tokenizer, self.cache_dir,
                                                         self.corpus.train_sha256)
        self.val_store: TokenStore = build_token_store(self.corpus.val, self.tokenizer, self.cache_dir,
                                                       self.corpus.val_sha256)
        self.codewords: list[str] = select_codewords(self.tokenizer, self.n_codewords, self.codeword_seed,
                                                      self.codeword_rule)
        self.bank = ProbeBank(self.tokenizer, self.codewords)
        eos = self.tokenizer.eos_id
        self.train_set = TrainExamples(self.train_store, self.seq_len, p_probe=self.p_probe, gap_train=self.gap_train,
                                       seed=self.seed, mask_padding=self.mask_padding, bank=self.bank, eos_id=eos)
        self.val_set = ValExamples(self.val_store, self.seq_len, eos, self.n_val, self.mask_padding, self.val_crop)
        self.probe_sets = {
            kind: ProbeEvalSet(kind, self.n_eval, self.bank, self.seq_len, eos, self.tokenizer.vocab_size,
                               gaps=gaps, eval_seed=self.eval_seed, mask_padding=self.mask_padding,
                               filler_range=self.filler_range, gap_policy=self.gap_policy)
            for kind, gaps in (("in", self.gap_train), ("ood", self.gap_ood))
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
            "source": self.source, "tokenizer": self.tokenizer.name, "vocab_size": self.tokenizer.vocab_size,
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
        """Start the train stream after ``global_step`` optimizer steps (and stop after ``max_steps``)."""
        per_step = int(accumulate) * self.micro_batch_size
        self.start_sample = int(global_step) * per_step
        self.total_samples = None if max_steps is None else max(0, int(max_steps) * per_step - self.start_sample)

    # ------------------------------------------------------------------ loaders
    def train_sampler(self) -> ResumableSampler:
        self._need()
        return ResumableSampler(len(self.train_set), self.seed, start=self.start_sample, total=self.total_samples)

    def train_dataloader(self) -> DataLoader:
        """Micro-batches of the resumable stream (content is a pure function of the sample keys)."""
        if self.num_workers > 0:  # workers never tokenise; silences the tokenizers fork warning
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        return DataLoader(self.train_set, batch_size=self.micro_batch_size, sampler=self.train_sampler(),
                          num_workers=self.num_workers, collate_fn=collate,
                          persistent_workers=self.num_workers > 0)

    def val_loader(self, batch_size: int | None = None) -> DataLoader:
        """Fixed LM validation batches (no shuffle)."""
        self._need()
        return DataLoader(self.val_set, batch_size=batch_size or self.eval_batch_size, shuffle=False,
                          collate_fn=collate)

    def probe_eval_loader(self, kind: str, batch_size: int | None = None) -> DataLoader:
        """Fixed probe eval batches of set ``kind`` in {"in", "ood"}."""
        self._need()
        if kind not in self.probe_sets:
            raise ValueError(f"kind must be 'in' or 'ood', got {kind!r}")
        return DataLoader(self.probe_sets[kind], batch_size=batch_size or self.eval_batch_size, shuffle=False,
                          collate_fn=collate)
