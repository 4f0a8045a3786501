"""Trunk trajectories on disk: the store (format, writer, reader) and the snapshot callback.

Only the store is re-exported here; the Lightning callback lives in ``trajectory.callback`` and
is imported explicitly by training code, so analysis code never pulls in Lightning.
"""

from backbone_lab.trajectory.store import (
    TrajectoryError,
    TrajectoryReader,
    TrajectoryWriter,
    resolve_trajectory_dir,
)

__all__ = ["TrajectoryError", "TrajectoryReader", "TrajectoryWriter", "resolve_trajectory_dir"]
