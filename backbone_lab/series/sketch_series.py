"""Sketch a checkpoint series into a small trajectory store (``sketch_dim=k`` of ``analyze``).

Each checkpoint is read once, tensor by tensor in chunks of `sketch.SKETCH_CHUNK` elements, and
sketched per block (`sketch.BlockSketcher`); the store holds the *drift* sketches y_t − y_first
(float32, one ``sketch.block{b}`` tensor of k numbers per block) with ``meta.sketch`` = the
sketch record, so `run_analysis` knows the numbers are sketched. Peak memory O(chunk + B·k).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from backbone_lab.series.reader import SeriesReader
from backbone_lab.series.sketch import SKETCH_CHUNK, BlockSketcher, SketchSpec
from backbone_lab.series.sources import SeriesError
from backbone_lab.trajectory.store import MANIFEST, TrajectoryWriter


def sketch_checkpoint(reader: SeriesReader, step: int, sketcher: BlockSketcher) -> np.ndarray:
    """(blocks, k) float64 sketch of one checkpoint's trunk."""
    Y = sketcher.zeros_numpy()
    buf = np.empty(SKETCH_CHUNK, dtype=np.float32)
    src = reader._src[step]
    for t in reader.tensors:
        for a in range(0, t["numel"], SKETCH_CHUNK):
            b = min(a + SKETCH_CHUNK, t["numel"])
            src.read(t["name"], a, b, buf[: b - a])
            sketcher.add_numpy(Y, t["name"], buf[: b - a], a)
    return Y


def write_sketch_trajectory(reader: SeriesReader, spec: SketchSpec, out: str | os.PathLike, progress=None) -> Path:
    """Sketch every checkpoint of ``reader`` into the trajectory folder ``out`` (created; an existing
    one of the same sketch is resumed: steps already there are skipped). Returns ``out``."""
    sketcher = BlockSketcher(spec, reader.tensors)
    out = Path(out)
    meta = {"sketch": spec.record(), **reader.meta}
    if (out / MANIFEST).exists():
        old = json.loads((out / MANIFEST).read_text()).get("meta", {}).get("sketch")
        if old != meta["sketch"]:
            raise SeriesError(f"{out}: holds a sketch with other settings ({old}); remove the folder or choose another out=")
    writer = TrajectoryWriter(out, tensors=sketcher.sketch_layout(), subset="trunk", meta=meta)
    origin = sketch_checkpoint(reader, reader.steps[0], sketcher)
    for i, step in enumerate(reader.steps):
        if step in writer.steps:
            continue
        Y = origin if i == 0 else sketch_checkpoint(reader, step, sketcher)
        drift = (Y - origin).astype(np.float32)
        writer.append(step, {f"sketch.block{b}": drift[r] for r, b in enumerate(sketcher.blocks)})
        if progress is not None:
            progress("sketch", i + 1, len(reader.steps))
    return out
