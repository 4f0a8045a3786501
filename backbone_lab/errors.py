"""Errors that reach the user as one line (the CLI prints them without a traceback)."""

from __future__ import annotations


class BackboneLabError(Exception):
    """Base class: a problem the user can fix; the message names the problem and the fix."""


class ConfigError(BackboneLabError, ValueError):
    """Bad or inconsistent configuration."""


class RunDirError(BackboneLabError):
    """The run directory cannot be used as asked (holds another run, ...)."""


def user_facing_errors() -> tuple[type[BaseException], ...]:
    """Exception types the CLIs report as one line: ours plus the data/store ones."""
    types: list[type[BaseException]] = [BackboneLabError]
    try:
        from backbone_lab.data.errors import DataError

        types.append(DataError)
    except ImportError:  # pragma: no cover - data layer always present in a full install
        pass
    try:
        from backbone_lab.trajectory.store import TrajectoryError

        types.append(TrajectoryError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)
