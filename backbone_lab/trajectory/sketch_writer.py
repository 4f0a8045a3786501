"""A `TrajectoryWriter` front that stores sketched snapshots (``snapshots.sketch_dim=k``).

`SketchingWriter.encode(step, named_tensors)` sketches the trunk per block
(`backbone_lab.series.sketch.BlockSketcher`: on the tensors' device — a GPU scatter-add — or the
numpy twin on the CPU), subtracts the sketch of the first snapshot (the *origin*, float64, kept in
``sketch_origin.npy`` so a resumed run continues the same rows) and encodes the (blocks, k) drift
rows as float32 tensors ``sketch.block{b}``; `write` is the inner writer's. It has the
``path``/``encode``/``write`` of a `TrajectoryWriter`, so `BackgroundSnapshotWriter` runs it off the
training thread: there the training thread only copies the trunk to host memory and the sketch
happens in the writer thread (CPU training); on a GPU, `append` sketches on the device and only
B·k numbers leave it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from backbone_lab.durable import atomic_write
from backbone_lab.series.sketch import BlockSketcher, SketchSpec
from backbone_lab.trajectory.store import EncodedSnapshot, TrajectoryWriter

ORIGIN_FILE = "sketch_origin.npy"


class SketchingWriter:
    """Sketched snapshots into the trajectory folder ``path``.

    Args:
        path: the ``trajectory/`` folder (resumed if it holds the same sketch).
        spec: the sketch (k per block, seed, nnz).
        layout: the trunk layout ``[{name, shape, block, trunk}]`` (`trunk.subset_layout`).
        subset: label of the sketched subset; meta: manifest meta (``sketch`` is added).
    """

    def __init__(self, path: str | Path, spec: SketchSpec, layout: list[dict], subset: str = "trunk", meta: dict | None = None):
        self.sketcher = BlockSketcher(spec, layout)
        self.inner = TrajectoryWriter(path, tensors=self.sketcher.sketch_layout(), subset=subset,
                                      meta={**(meta or {}), "sketch": spec.record()})
        self.path = self.inner.path
        origin = self.path / ORIGIN_FILE
        self.origin: np.ndarray | None = np.load(origin) if origin.exists() else None

    @property
    def steps(self) -> list[int]:
        return self.inner.steps

    def sketch(self, named_tensors: Mapping[str, Any]) -> np.ndarray:
        """(blocks, k) float64 sketch of name -> tensor (torch, any device) or numpy array."""
        first = next(iter(named_tensors.values()))
        if isinstance(first, np.ndarray):
            Y = self.sketcher.zeros_numpy()
            for name, v in named_tensors.items():
                self.sketcher.add_numpy(Y, name, np.asarray(v, dtype=np.float32).reshape(-1))
            return Y
        import torch

        with torch.no_grad():
            return self.sketcher.sketch_torch(dict(named_tensors)).cpu().numpy()

    def encode(self, step: int, named_tensors: Mapping[str, Any]) -> EncodedSnapshot:
        Y = self.sketch(named_tensors)
        if self.origin is None:
            self.origin = Y
            buf = io.BytesIO()
            np.save(buf, Y)
            atomic_write(self.path / ORIGIN_FILE, [buf.getbuffer()])
        drift = (Y - self.origin).astype(np.float32)
        return self.inner.encode(step, {f"sketch.block{b}": drift[r] for r, b in enumerate(self.sketcher.blocks)})

    def write(self, snap: EncodedSnapshot) -> bool:
        return self.inner.write(snap)

    def append(self, step: int, named_tensors: Mapping[str, Any]) -> bool:
        return self.write(self.encode(step, named_tensors))
