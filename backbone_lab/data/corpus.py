"""A run's training/validation texts: its source's records (`data.sources`) through the shared filters.

PAPER_MAP §2.1 filters (applied to every source): take the first ``max_texts`` records in dataset
order, skip empty/whitespace-only texts, then drop texts shorter than ``min_chars`` (40).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import DataError
from .sources import raw_texts
from .tokenizer import texts_sha256

MIN_CHARS = 40


@dataclass
class Corpus:
    """Train and validation texts plus a content hash of each (used as cache keys)."""

    train: list[str]
    val: list[str]
    source: str

    def __post_init__(self):
        self.train_sha256 = texts_sha256(self.train)
        self.val_sha256 = texts_sha256(self.val)


def filter_texts(texts: Sequence[str], min_chars: int = MIN_CHARS, max_texts: int | None = None) -> list[str]:
    """First ``max_texts`` records, minus empty/whitespace texts and texts < ``min_chars`` chars."""
    if max_texts is not None:
        texts = texts[: int(max_texts)]
    return [t for t in texts if t and t.strip() and len(t) >= min_chars]


def load_corpus(config, cache_dir: str | Path | None = None, min_chars: int = MIN_CHARS) -> Corpus:
    """The filtered train/val texts of a `DataConfig`: its source's records (`sources.raw_texts`:
    synthetic stories, local files, the hub, or a user's ``package.module:function``) through the
    same PAPER_MAP §2.1 filters for every source (``max_*_texts``, ``min_chars``)."""
    c = config
    train_raw, val_raw = raw_texts(c, cache_dir)
    corpus = Corpus(
        train=filter_texts(train_raw, min_chars, c.max_train_texts),
        val=filter_texts(val_raw, min_chars, c.max_val_texts),
        source=c.source,
    )
    if not corpus.train:
        raise DataError(f"no training texts left after filtering (source={c.source}, min_chars={min_chars})")
    if not corpus.val:
        raise DataError(f"no validation texts left after filtering (source={c.source}, min_chars={min_chars})")
    return corpus
