"""A checkpoint series seen as a trajectory: `SeriesReader` streams the same ``(T, c)`` float32
column blocks as `TrajectoryReader`, straight from the checkpoints, so the analysis
(`analysis.gram.stream_grams`, every stage) runs on a series in place, without a copy.

Layout: the trunk tensors the rule selects (`trunk_rules`), ordered by (block, name), each with
its ``block`` and ``trunk: true`` roles — the manifest a run of ours would have. Opening a series
checks every checkpoint's headers (not the data) before any Gram work: the declared trunk present,
the same shapes everywhere, one architecture (`SeriesError`, one line naming the checkpoint and
the fix). Peak memory: O(T · chunk) for the block being streamed, independent of the model size.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from backbone_lab.series.sources import Checkpoint, SeriesError, TensorSource, check_series, discover, open_checkpoint
from backbone_lab.series.trunk_rules import TrunkRule, parse_trunk_rule
from backbone_lab.trajectory import layout as L
from backbone_lab.trajectory.store import _prefetched, merge_ranges


def validate_series(sources: Sequence[TensorSource], rule: TrunkRule) -> list[dict]:
    """The trunk layout of a series, after checking every checkpoint against the first.

    Raises SeriesError: no trunk tensor matches the rule; a checkpoint lacks a trunk tensor, has
    another shape or another architecture.
    """
    first = sources[0]
    names = rule.select(list(first.tensors))
    if not names:
        sample = ", ".join(list(first.tensors)[:4])
        raise SeriesError(f"{first.ck.label}: no tensor matches trunk={rule.label} (names look like {sample}); "
                          "pick the family's preset (gpt_neox, llama, gpt2, ours) or a glob such as 'layers.*.weight'")
    ref = first.tensors
    for src in sources[1:]:
        if src.arch != first.arch and None not in (src.arch, first.arch):
            raise SeriesError(f"{src.ck.label}: architecture {src.arch} but {first.ck.label} is {first.arch}; "
                              "a series holds checkpoints of one model — remove the stray checkpoint")
        have = src.tensors
        missing = [n for n, _ in names if n not in have]
        if missing:
            raise SeriesError(f"{src.ck.label}: lacks trunk tensor {missing[0]} ({len(missing)} missing) that {first.ck.label} has; "
                              "download the complete revision or drop it")
        for n, _ in names:
            if have[n][0] != ref[n][0]:
                raise SeriesError(f"{src.ck.label}: tensor {n} has shape {list(have[n][0])} but {list(ref[n][0])} in "
                                  f"{first.ck.label}; a trajectory needs one shape — analyse the parts separately")
    return L.build_layout([{"name": n, "shape": list(ref[n][0]), "block": b, "trunk": True} for n, b in names])


class SeriesReader:
    """Read-only trajectory view of a checkpoint series (the `TrajectoryReader` interface the
    analysis uses: ``steps``, ``names``, ``shapes``, ``dim``, ``tensors``, ``blocks``, ``columns``,
    ``subset_columns``, ``load``, ``iter_column_chunks``).

    Args:
        series: a series folder / list file (`sources.discover`) or a list of `Checkpoint`.
        trunk: preset name or rule (`trunk_rules.parse_trunk_rule`).
    """

    dtype = "float32"  # the analysis dtype the blocks are converted to
    subset = "trunk"
    world_size = 1
    verify = False  # checkpoints carry no checksums

    def __init__(self, series: str | os.PathLike | Sequence[Checkpoint], trunk: str = "gpt_neox"):
        self.checkpoints = check_series(list(series), "checkpoint list") if isinstance(series, (list, tuple)) else discover(series)
        self.path = Path(series) if not isinstance(series, (list, tuple)) else self.checkpoints[0].path.parent
        self.rule = parse_trunk_rule(trunk)
        self.sources: list[TensorSource] = []
        try:
            for ck in self.checkpoints:
                self.sources.append(open_checkpoint(ck))
            self.tensors = validate_series(self.sources, self.rule)
        except BaseException:
            self.close()
            raise
        self.steps = [c.step for c in self.checkpoints]
        self._src = {c.step: s for c, s in zip(self.checkpoints, self.sources)}
        self.names = [t["name"] for t in self.tensors]
        self.shapes = [tuple(t["shape"]) for t in self.tensors]
        self.dim = int(sum(t["numel"] for t in self.tensors))
        dtypes = sorted({self.sources[0].tensors[n][1] for n in self.names})
        self.meta = {"series": {"source": str(self.path), "trunk_rule": self.rule.label, "architecture": self.sources[0].arch, "trunk_dim": self.dim,
                                "source_dtypes": dtypes,
                                "checkpoints": [{"step": c.step, "path": str(c.path), "label": c.label} for c in self.checkpoints]}}

    def close(self) -> None:
        for s in self.sources:
            s.close()

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"SeriesReader({str(self.path)!r}, T={len(self.steps)}, dim={self.dim}, trunk={self.rule.label})"

    # ------------------------------------------------------------------ roles / columns
    @property
    def blocks(self) -> list[int]:
        return L.trunk_blocks(self.tensors)

    @property
    def has_non_trunk_block_tensors(self) -> bool:
        return False

    def files(self, step: int) -> list[Path]:
        return [f.path for f in self._src[step].files]

    def columns(self, names: str | Sequence[str]) -> list[slice]:
        if isinstance(names, str):
            sel = [t for t in self.tensors if re.fullmatch(names, t["name"])]
        else:
            sel = [t for t in self.tensors if t["name"] in set(names)]
        return merge_ranges([slice(t["offset"], t["offset"] + t["numel"]) for t in sel])

    def subset_columns(self, subset: str) -> list[slice]:
        sel = L.select(self.tensors, subset)
        if not sel:
            raise SeriesError(f"{self.path}: subset {subset!r} matches no trunk tensor of the series (e.g. {self.names[:2]}); pick another subset")
        return merge_ranges([slice(t["offset"], t["offset"] + t["numel"]) for t in sel])

    # ------------------------------------------------------------------ reading
    def read_into(self, step: int, c0: int, c1: int, out: np.ndarray) -> None:
        """out (c1 − c0,) float32 ← flat trunk columns [c0, c1) of checkpoint ``step``."""
        src = self._src[step]
        for t in self.tensors:
            a, b = max(c0, t["offset"]), min(c1, t["offset"] + t["numel"])
            if a < b:
                src.read(t["name"], a - t["offset"], b - t["offset"], out[a - c0: b - c0])

    def load(self, step: int, verify: bool | None = None) -> np.ndarray:
        if step not in self._src:
            raise SeriesError(f"{self.path}: step {step} not in the series")
        out = np.empty(self.dim, dtype=np.float32)
        self.read_into(step, 0, self.dim, out)
        return out

    def load_named(self, step: int) -> dict[str, np.ndarray]:
        flat = self.load(step)
        return {t["name"]: flat[t["offset"]: t["offset"] + t["numel"]].reshape(t["shape"]) for t in self.tensors}

    def iter_column_chunks(self, chunk_cols: int, steps: Sequence[int] | None = None, columns: Sequence[slice] | None = None,
                           verify: bool | None = None, prefetch: bool = False, reuse_buffers: bool = False) -> Iterator[tuple[slice, np.ndarray]]:
        """``(col_slice, block)``, block float32 ``(len(steps), c)``: as `TrajectoryReader.iter_column_chunks`."""
        steps = list(self.steps if steps is None else steps)
        for s in steps:
            if s not in self._src:
                raise SeriesError(f"{self.path}: step {s} not in the series (have {self.steps[:3]}...)")
        ranges = merge_ranges(list(columns)) if columns is not None else [slice(0, self.dim)]
        gen = self._chunks(max(1, int(chunk_cols)), steps, ranges, ring=4 if reuse_buffers else 0)
        yield from (_prefetched(gen) if prefetch else gen)

    def _chunks(self, chunk_cols: int, steps: list[int], ranges: list[slice], ring: int = 0) -> Iterator[tuple[slice, np.ndarray]]:
        # ring > 0: recycle that many block buffers (steady memory: no heap growth over long streams;
        # a yielded block is valid until the consumer asks for the next one, prefetch holding one more)
        bufs = [np.empty((len(steps), chunk_cols), dtype=np.float32) for _ in range(ring)]
        n = 0
        for r in ranges:
            for c0 in range(r.start, r.stop, chunk_cols):
                c1 = min(c0 + chunk_cols, r.stop)
                block = bufs[n % ring][:, : c1 - c0] if ring else np.empty((len(steps), c1 - c0), dtype=np.float32)
                n += 1
                for i, s in enumerate(steps):
                    self.read_into(s, c0, c1, block[i])
                yield slice(c0, c1), block


def series_bytes(reader: SeriesReader) -> int:
    """Bytes of trunk data one pass reads (source dtypes)."""
    size = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
    t0 = reader.sources[0].tensors
    return len(reader.steps) * sum(math.prod(t0[n][0]) * size.get(t0[n][1], 4) for n in reader.names)
