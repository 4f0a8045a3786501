"""`data.source=synthetic`: the project's own deterministic stories (`data/synthetic.py`), the
embedded CPU default and the corpus of every test; cached under `<cache_dir>/corpora/`."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Options:
    """`data.options` of the synthetic source."""

    n_train_stories: int = 8000
    """Stories generated for training."""
    n_val_stories: int = 400
    """Stories generated for validation (the ones after the training stories, same stream)."""
    synthetic_seed: int = 1234
    """Generator seed (the corpus is cached by it)."""

    def __post_init__(self) -> None:
        for name in ("n_train_stories", "n_val_stories"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.options.{name} must be >= 0, got {getattr(self, name)}")


def texts(options: Options, config, cache_dir) -> tuple[list[str], list[str]]:
    """`n_train_stories` + `n_val_stories` stories of one seeded stream: training first."""
    stories = cached_synthetic_stories(options.n_train_stories + options.n_val_stories, options.synthetic_seed,
                                       cache_dir)
    return stories[:options.n_train_stories], stories[options.n_train_stories:]


def synthetic_cache_path(cache_dir: str | Path, n_stories: int, seed: int) -> Path:
    """Cache file of `generate_stories(n_stories, seed)`, keyed by a hash of the generator's inputs
    (`synthetic.recipe_fingerprint`, n_stories, seed)."""
    from backbone_lab.data import synthetic

    inputs = {"recipe": synthetic.recipe_fingerprint(), "n_stories": int(n_stories), "seed": int(seed)}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    return Path(cache_dir) / "corpora" / f"synthetic-{key}.json"


def cached_synthetic_stories(n_stories: int, seed: int, cache_dir: str | Path | None) -> list[str]:
    """`synthetic.generate_stories(n_stories, seed)`, read from the cache when it holds them.

    The cache file holds the stories and their `texts_sha256`; a file whose stories do not match
    their hash (damaged) is regenerated and rewritten atomically. `cache_dir=None`: no cache.
    """
    from backbone_lab.data import synthetic
    from backbone_lab.data.tokenizer import texts_sha256
    from backbone_lab.durable import atomic_write_json

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
