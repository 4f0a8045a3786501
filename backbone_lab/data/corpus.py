"""Training/validation texts from synthetic stories, local files or the TinyStories hub dataset.

PAPER_MAP §2.1 filters (applied to every source): take the first ``max_texts`` records in dataset
order, skip empty/whitespace-only texts, then drop texts shorter than ``min_chars`` (40).
Local ``.txt`` files are read with the ``datasets`` "text" builder and ``sample_by="paragraph"``
(one record per blank-line separated block); ``.json``/``.jsonl`` with the "json" builder,
taking the ``text_field`` column. Synthetic stories are cached under
``<cache_dir>/corpora/`` by the generator's inputs (`cached_synthetic_stories`).
"""

from __future__ import annotations

import importlib

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from backbone_lab.durable import atomic_write_json

from . import synthetic
from .errors import DataError
from .tokenizer import texts_sha256

log = logging.getLogger(__name__)

HUB_DATASET = "roneneldan/TinyStories"
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


def _as_list(files) -> list[str]:
    if files is None:
        return []
    if isinstance(files, (str, Path)):
        return [str(files)]
    return [str(f) for f in files]


def load_local_texts(files, cache_dir: str | Path | None = None, text_field: str = "text") -> list[str]:
    """All records of local text/JSON/JSONL files, in file order (no filtering; text records lose
    leading/trailing newlines left over from the paragraph split)."""
    import datasets

    paths = _as_list(files)
    if not paths:
        raise DataError("no local data files given: set data.train_files=[path/to/stories.txt]")
    for p in paths:
        if not Path(p).expanduser().exists():
            raise DataError(f"data file not found: {p}")
    paths = [str(Path(p).expanduser().resolve()) for p in paths]
    suffixes = {Path(p).suffix.lower() for p in paths}
    if suffixes <= {".json", ".jsonl"}:
        builder, kwargs = "json", {}
    elif not suffixes & {".json", ".jsonl"}:
        builder, kwargs = "text", {"sample_by": "paragraph"}
    else:
        raise DataError(f"mixed text and JSON data files are not supported: {paths}")
    hf_cache = str(Path(cache_dir) / "hf_datasets") if cache_dir is not None else None
    ds = datasets.load_dataset(builder, data_files={"train": paths}, split="train", cache_dir=hf_cache, **kwargs)
    if text_field not in ds.column_names:
        raise DataError(f"JSON data has no {text_field!r} field (columns: {ds.column_names}); set data.text_field")
    texts = list(ds[text_field])
    return [t.strip("\n") for t in texts] if builder == "text" else texts  # paragraph-split artefacts


def load_hub_texts(split: str, max_texts: int | None, cache_dir: str | Path | None = None) -> list[str]:
    """First ``max_texts`` records of a split of the TinyStories hub dataset (needs network or HF cache)."""
    import datasets

    sl = f"{split}[:{int(max_texts)}]" if max_texts is not None else split
    hf_cache = str(Path(cache_dir) / "hf_datasets") if cache_dir is not None else None
    try:
        ds = datasets.load_dataset(HUB_DATASET, split=sl, cache_dir=hf_cache)
    except Exception as exc:  # offline (ConnectionError), missing cache, ...
        raise DataError(
            f"cannot load {HUB_DATASET!r} from the hub ({type(exc).__name__}); offline? use local "
            f"files instead: data.source=local data.train_files=[stories.txt] data.val_files=[val.txt]"
        ) from None
    return list(ds["text"])


def synthetic_cache_path(cache_dir: str | Path, n_stories: int, seed: int) -> Path:
    """Cache file of `generate_stories(n_stories, seed)`, keyed by a hash of the generator's inputs
    (`synthetic.recipe_fingerprint`, n_stories, seed)."""
    inputs = {"recipe": synthetic.recipe_fingerprint(), "n_stories": int(n_stories), "seed": int(seed)}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    return Path(cache_dir) / "corpora" / f"synthetic-{key}.json"


def cached_synthetic_stories(n_stories: int, seed: int, cache_dir: str | Path | None) -> list[str]:
    """`synthetic.generate_stories(n_stories, seed)`, read from the cache when it holds them.

    The cache file holds the stories and their `texts_sha256`; a file whose stories do not match
    their hash (damaged) is regenerated and rewritten atomically. `cache_dir=None`: no cache.
    """
    if cache_dir is None:
        return synthetic.generate_stories(n_stories, seed)
    path = synthetic_cache_path(cache_dir, n_stories, seed)
    if path.exists():
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            stories = payload["stories"]
            if texts_sha256(stories) == payload["sha256"]:
                return stories
        except (OSError, ValueError, KeyError, TypeError):
            pass
        log.warning("%s: damaged synthetic-story cache, regenerating it", path)
    stories = synthetic.generate_stories(n_stories, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"generator": "backbone_lab.data.synthetic", "recipe": synthetic.recipe_fingerprint(),
                             "n_stories": int(n_stories), "seed": int(seed), "sha256": texts_sha256(stories),
                             "stories": stories}, indent=None)
    return stories


def load_source(name: str):
    """The corpus function of a user data source `package.module:function` (one line if missing)."""
    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise DataError(f"data.source={name!r}: cannot import it ({type(err).__name__}: {err}); "
                        "give package.module:function on the Python path") from None
    if not callable(fn):
        raise DataError(f"data.source={name!r} is not a function")
    return fn


def load_corpus(config, cache_dir: str | Path | None = None, min_chars: int = MIN_CHARS) -> Corpus:
    """The filtered train/val texts of a `DataConfig` (its `source`):

    - synthetic: ``n_train_stories`` + ``n_val_stories`` stories from one seeded stream
      (validation = the stories after the training ones), cached under ``cache_dir``;
    - local: ``train_files`` (and ``val_files``); without ``val_files`` the last
      ``val_fraction`` of the training records (at least 1) are held out for validation;
    - tinystories: the hub dataset (PAPER_MAP §2.1: first 200k train / 5k validation records);
    - ``package.module:function``: a user source, ``function(config) -> (train_texts, val_texts)``
      (adding a dataset = that function + a ``conf/data/<name>.yaml``).
    Every source goes through the same PAPER_MAP §2.1 filters (``max_*_texts``, ``min_chars``).
    """
    c = config
    if c.source == "synthetic":
        stories = cached_synthetic_stories(c.n_train_stories + c.n_val_stories, c.synthetic_seed, cache_dir)
        train_raw, val_raw = stories[:c.n_train_stories], stories[c.n_train_stories:]
    elif c.source == "local":
        train_raw = load_local_texts(c.train_files, cache_dir, c.text_field)
        if _as_list(c.val_files):
            val_raw = load_local_texts(c.val_files, cache_dir, c.text_field)
        else:
            n_hold = max(1, int(round(len(train_raw) * c.val_fraction)))
            if len(train_raw) < 2:
                raise DataError(f"need >= 2 records in {c.train_files} to hold out validation; set data.val_files")
            train_raw, val_raw = train_raw[:-n_hold], train_raw[-n_hold:]
    elif c.source == "tinystories":
        train_raw = load_hub_texts("train", c.max_train_texts, cache_dir)
        val_raw = load_hub_texts("validation", c.max_val_texts, cache_dir)
    else:
        train_raw, val_raw = load_source(c.source)(c)
        train_raw, val_raw = list(train_raw), list(val_raw)
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
