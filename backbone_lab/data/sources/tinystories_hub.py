"""`data.source=tinystories`: the paper's corpus from the Hugging Face hub (PAPER_MAP §2.1: the
first 200k train / 5k validation records, `data.max_train_texts` / `data.max_val_texts`); needs
the network or the hub's cache under `<cache_dir>/hf_datasets`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Options:
    """`data.options` of the hub source."""

    dataset: str = "roneneldan/TinyStories"
    """Hub dataset name (a dataset with a `text` column and these splits)."""
    train_split: str = "train"
    """Split of the training records."""
    val_split: str = "validation"
    """Split of the validation records."""


def texts(options: Options, config, cache_dir) -> tuple[list[str], list[str]]:
    """The first `max_train_texts` / `max_val_texts` records of the two splits."""
    return (load_hub_texts(options.dataset, options.train_split, config.max_train_texts, cache_dir),
            load_hub_texts(options.dataset, options.val_split, config.max_val_texts, cache_dir))


def load_hub_texts(dataset: str, split: str, max_texts: int | None, cache_dir: str | Path | None = None) -> list[str]:
    """First `max_texts` records of a split of a hub dataset (needs the network or the hub's cache)."""
    import datasets

    from backbone_lab.data.errors import DataError

    sl = f"{split}[:{int(max_texts)}]" if max_texts is not None else split
    hf_cache = str(Path(cache_dir) / "hf_datasets") if cache_dir is not None else None
    try:
        ds = datasets.load_dataset(dataset, split=sl, cache_dir=hf_cache)
    except Exception as exc:  # offline (ConnectionError), missing cache, ...
        raise DataError(
            f"cannot load {dataset!r} from the hub ({type(exc).__name__}); offline? use local files "
            f"instead: data=local data.options.train_files=[stories.txt] data.options.val_files=[val.txt]"
        ) from None
    return list(ds["text"])
