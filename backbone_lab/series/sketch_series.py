"""Sketch a checkpoint series into a small trajectory store (``sketch_dim=k`` of ``analyze``).

The series is streamed once in column chunks (as the dense Gram pass), each chunk's coordinate
hashes computed once for all checkpoints, and sketched per block (`sketch.BlockSketcher`); the store holds the *drift* sketches y_t − y_first
(float32, one ``sketch.block{b}`` tensor of k numbers per block) with ``meta.sketch`` = the
sketch record, so `run_analysis` knows the numbers are sketched. Peak memory O(T·chunk + T·B·k).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from backbone_lab.series.reader import SeriesReader
from backbone_lab.series.sketch import SKETCH_CHUNK, BlockSketcher, SketchSpec, add_slots, slot_indices
from backbone_lab.series.sources import SeriesError
from backbone_lab.trajectory.store import MANIFEST, TrajectoryWriter


def sketch_all(reader: SeriesReader, sketcher: BlockSketcher, chunk_bytes: int = 64 << 20, progress=None) -> np.ndarray:
    """(T, blocks, k) float64 sketches of every checkpoint, in one column-streamed pass: the
    coordinate hashes of a chunk are computed once and reused for the T checkpoints (the hash,
    not the scatter, is the cost). Memory O(T·chunk + T·B·k)."""
    spec, T = sketcher.spec, len(reader.steps)
    m, scale = spec.buckets, 1.0 / math.sqrt(spec.nnz)
    Y = np.zeros((T, len(sketcher.blocks), spec.k))
    chunk = max(1024, min(SKETCH_CHUNK, chunk_bytes // (4 * T)))
    done = 0
    for sl, block in reader.iter_column_chunks(chunk, prefetch=True, reuse_buffers=True):
        for t in reader.tensors:
            a, b = max(sl.start, t["offset"]), min(sl.stop, t["offset"] + t["numel"])
            if a >= b:
                continue
            slots = slot_indices(a - t["offset"], b - a, sketcher.keys[t["name"]], m)
            row = sketcher.row[sketcher.block_of[t["name"]]]
            for i in range(T):
                add_slots(Y[i, row], slots, block[i, a - sl.start: b - sl.start], m, scale)
        done += sl.stop - sl.start
        if progress is not None:
            progress("sketch", done, reader.dim)
    return Y


def write_sketch_trajectory(reader: SeriesReader, spec: SketchSpec, out: str | os.PathLike, progress=None) -> Path:
    """Sketch every checkpoint of ``reader`` into the trajectory folder ``out`` (created; an existing
    one of the same sketch is resumed: steps already there are kept). Returns ``out``."""
    sketcher = BlockSketcher(spec, reader.tensors)
    out = Path(out)
    meta = {"sketch": spec.record(), **reader.meta}
    if (out / MANIFEST).exists():
        old = json.loads((out / MANIFEST).read_text()).get("meta", {}).get("sketch")
        if old != meta["sketch"]:
            raise SeriesError(f"{out}: holds a sketch with other settings ({old}); remove the folder or choose another out=")
    writer = TrajectoryWriter(out, tensors=sketcher.sketch_layout(), subset="trunk", meta=meta)
    if all(s in writer.steps for s in reader.steps):
        return out
    Y = sketch_all(reader, sketcher, progress=progress)
    drift = (Y - Y[0]).astype(np.float32)  # float64 difference, then float32 (relative to the drift)
    for i, step in enumerate(reader.steps):
        writer.append(step, {f"sketch.block{b}": drift[i, r] for r, b in enumerate(sketcher.blocks)})
    return out
