"""Errors that reach the user as one line (the CLIs print them without a traceback)."""

from __future__ import annotations


class BackboneLabError(Exception):
    """Base class: a problem the user can fix; the message names the problem and the fix."""


class ConfigError(BackboneLabError, ValueError):
    """Bad or inconsistent configuration."""


class RunDirError(BackboneLabError):
    """The run directory cannot be used as asked (holds another run, ...)."""


class RankFailure(Exception):
    """A rank of a multi-process run exited with an error or went silent (not a user error: the
    CLI prints the line, naming the rank, and exits 1)."""


def user_facing_errors() -> tuple[type[BaseException], ...]:
    """Exception types the CLIs report as one line: ours, the data / store ones, a full disk."""
    from backbone_lab.data.errors import DataError
    from backbone_lab.durable import DiskFullError, LinkedFolderError
    from backbone_lab.trajectory.store import TrajectoryError

    return (BackboneLabError, DataError, TrajectoryError, DiskFullError, LinkedFolderError)
