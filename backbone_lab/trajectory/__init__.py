"""Trunk trajectories on disk: the store (format, writer, reader) and the snapshot callback.

Only the store is re-exported here; the Lightning callback lives in ``trajectory.callback`` and
is imported explicitly by training code, so analysis code never pulls in Lightning.
"""

from backbone_lab.trajectory.store import (
    TRUNK_REGEX,
    TrajectoryError,
    TrajectoryReader,
    TrajectoryWriter,
    block_indices,
    resolve_subset,
    resolve_trajectory_dir,
    subset_regex,
)

__all__ = [
    "TRUNK_REGEX",
    "TrajectoryError",
    "TrajectoryReader",
    "TrajectoryWriter",
    "block_indices",
    "resolve_subset",
    "resolve_trajectory_dir",
    "subset_regex",
]
