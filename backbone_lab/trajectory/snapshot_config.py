"""`SnapshotConfig`, the schema of the `snapshots` group, and the snapshot steps it selects, without
Lightning or torch (the CLI checks a command line against it before they are imported); the
callback that writes the snapshots is `backbone_lab.trajectory.callback`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from backbone_lab.trajectory.store import DTYPES


@dataclass
class SnapshotConfig:
    """When and how the trunk is dumped (`conf/snapshots/`)."""

    enabled: bool = True
    """Dump snapshots at all (the analysis needs them)."""
    every: int = 25
    """Base cadence in optimizer steps (plus step 0, step 1 and the final step)."""
    dense: list[list[int]] = field(default_factory=list)
    """Extra ranges [[from, to, every], ...], e.g. the SGD controls' [[600, 2000, 50]]."""
    extra_steps: list[int] = field(default_factory=list)
    """Single extra steps."""
    include_init: bool = True
    """Snapshot step 0 (the initialisation)."""
    include_step1: bool = True
    """Snapshot step 1 (the paper's drift anchor)."""
    subset: str = "trunk"
    """trunk | blocks_with_ln | full (see backbone_lab.trunk)."""
    dtype: str = "float32"
    """Storage dtype: float32 | float16 | bfloat16."""
    sliced: Optional[bool] = None
    """Several ranks: each writes its slice (true) or rank 0 writes all (false); null = sliced.
    benchmarks/bench_ddp.py, 2 CPU ranks, paper-size trunk (100.7 MB): 0.057 s per snapshot sliced
    vs 0.172 s by rank 0 (medians of 4 interleaved rounds). FSDP always slices."""
    async_write: bool = True
    """Write snapshots from a background thread (training only copies the trunk to host
    memory); false = write on the training thread. The files are the same bytes either way."""
    sketch_dim: int = 0
    """0 = dense snapshots. k > 0: store instead a sparse-JL sketch of k numbers per block
    (`backbone_lab.series.sketch`, computed on the training device; drift from the first snapshot,
    float32): the analysis then reports sketched numbers with their bound. Single-process or
    data-parallel (rank 0) runs; not with FSDP-sharded parameters."""
    sketch_seed: int = 0
    """Seed of the sketch's hash (the projection)."""
    sketch_nnz: int = 4
    """Non-zeros per coordinate of the sparse JL (sketch_dim must be a multiple)."""

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"snapshots.every must be >= 1, got {self.every}")
        for rng in self.dense:
            if len(rng) != 3 or rng[2] < 1 or rng[0] > rng[1]:
                raise ValueError(f"snapshots.dense entries must be [from, to, every >= 1], got {list(rng)}")
        if any(s < 0 for s in self.extra_steps):
            raise ValueError(f"snapshots.extra_steps must be >= 0, got {list(self.extra_steps)}")
        from backbone_lab.trunk import SUBSETS  # torch: imported when typed, after the CLI's check

        if self.subset not in SUBSETS:
            raise ValueError(f"snapshots.subset={self.subset!r} is not one of {' | '.join(SUBSETS)}")
        if self.sketch_dim < 0 or (self.sketch_dim and self.sketch_dim % self.sketch_nnz):
            raise ValueError(f"snapshots.sketch_dim={self.sketch_dim} must be 0 or a positive multiple of sketch_nnz={self.sketch_nnz}")
        if self.dtype not in DTYPES:
            raise ValueError(f"snapshots.dtype={self.dtype!r} is not one of {' | '.join(DTYPES)}")

    def steps(self, max_steps: int) -> list[int]:
        return snapshot_steps(max_steps, self.every, self.dense, self.extra_steps, self.include_init, self.include_step1)


def snapshot_steps(
    max_steps: int,
    every: int,
    dense: Sequence[Sequence[int]] = (),
    extra_steps: Sequence[int] = (),
    include_init: bool = True,
    include_step1: bool = True,
) -> list[int]:
    """Sorted snapshot steps in [0, max_steps].

    `dense` = [[from, to, every], ...] adds every `every` steps within [from, to] (inclusive),
    e.g. the SGD-control cadence [[600, 2000, 50], [2000, 4000, 100]] (PAPER_MAP §4.1).
    The final step is always included.
    """
    if every <= 0:
        raise ValueError(f"snapshots.every must be positive, got {every}")
    steps = set(range(every, max_steps + 1, every)) | {max_steps}
    if include_init:
        steps.add(0)
    if include_step1 and max_steps >= 1:
        steps.add(1)
    for rng in dense:
        if len(rng) != 3 or rng[2] <= 0:
            raise ValueError(f"snapshots.dense entries must be [from, to, every>0], got {list(rng)}")
        lo, hi, step = (int(x) for x in rng)
        steps.update(range(lo, min(hi, max_steps) + 1, step))
    steps.update(int(s) for s in extra_steps if 0 <= int(s) <= max_steps)
    return sorted(steps)
