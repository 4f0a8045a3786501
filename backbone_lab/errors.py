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


_USER_FACING: list[type[BaseException]] = [BackboneLabError]


def user_facing(cls: type[BaseException]) -> type[BaseException]:
    """Class decorator: the CLIs report `cls` as one line (used by the data, store and disk errors,
    which live in their own layers and are not subclasses of `BackboneLabError`)."""
    if cls not in _USER_FACING:
        _USER_FACING.append(cls)
    return cls


def user_facing_errors() -> tuple[type[BaseException], ...]:
    """Exception types the CLIs report as one line: ours and every class marked `@user_facing`
    (a class whose module was never imported cannot have been raised)."""
    return tuple(_USER_FACING)
