"""`data.source=local`: text or JSON files on disk, read through `datasets`.

`.txt` files are read with the `datasets` "text" builder and `sample_by="paragraph"` (one record
per blank-line separated block); `.json`/`.jsonl` with the "json" builder, taking the
`text_field` column. Without `val_files` the last `val_fraction` of the training records are
held out for validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Options:
    """`data.options` of the local-files source."""

    train_files: list[str] = field(default_factory=list)
    """Text (stories separated by blank lines) or JSON/JSONL files."""
    val_files: list[str] = field(default_factory=list)
    """Validation files; empty = hold out the last `val_fraction` of train_files' records."""
    val_fraction: float = 0.05
    """Without val_files: fraction of records held out for validation (at least 1)."""
    text_field: str = "text"
    """JSON files: the field holding the story."""

    def __post_init__(self) -> None:
        if not self.train_files:
            raise ValueError("data=local needs data.options.train_files=[path, ...]")
        if not (math.isfinite(self.val_fraction) and 0.0 <= self.val_fraction <= 1.0):
            raise ValueError(f"data.options.val_fraction must be in [0, 1], got {self.val_fraction}")


def texts(options: Options, config, cache_dir) -> tuple[list[str], list[str]]:
    """Records of `train_files` (and `val_files`, or the held-out tail of the training records)."""
    from backbone_lab.data.errors import DataError

    train = load_local_texts(options.train_files, cache_dir, options.text_field)
    if options.val_files:
        return train, load_local_texts(options.val_files, cache_dir, options.text_field)
    if len(train) < 2:
        raise DataError(f"need >= 2 records in {options.train_files} to hold out validation; "
                        "set data.options.val_files")
    n_hold = max(1, int(round(len(train) * options.val_fraction)))
    return train[:-n_hold], train[-n_hold:]


def load_local_texts(files, cache_dir: str | Path | None = None, text_field: str = "text") -> list[str]:
    """All records of local text/JSON/JSONL files, in file order (no filtering; text records lose
    leading/trailing newlines left over from the paragraph split)."""
    import datasets

    from backbone_lab.data.errors import DataError

    paths = [str(files)] if isinstance(files, (str, Path)) else [str(f) for f in files or []]
    if not paths:
        raise DataError("no local data files given: set data.options.train_files=[path/to/stories.txt]")
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
        raise DataError(f"JSON data has no {text_field!r} field (columns: {ds.column_names}); "
                        "set data.options.text_field")
    records = list(ds[text_field])
    return [t.strip("\n") for t in records] if builder == "text" else records  # paragraph-split artefacts
