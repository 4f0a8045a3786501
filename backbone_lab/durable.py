"""Durable file writes: nothing written is ever lost or half-written.

Every file the project writes goes through `atomic_write`: a temp file in the *same folder*
(so the final rename never crosses a file system), written, flushed and fsync'ed, then
`os.replace`d over the target and the folder fsync'ed. A crash or a full disk at any moment
leaves either the old file or the new one, never a mix; the temp file is removed on failure.
New files follow the process umask (unlike `tempfile.mkstemp`, which makes them 0600), so
group members on a shared cluster can read trajectories.

A symlink planted at a target is *replaced* (the rename swaps the directory entry), never
followed: a run folder shipped with `analysis/loglog.png -> ~/.bashrc` cannot redirect a write.
Figures go through `atomic_savefig`, appended logs through `open_append` (a link there is
removed first), and output folders through `output_folder`, which refuses a folder that is a
symlink in one line (`LinkedFolderError`).

`ensure_free_space` refuses a write that would not fit (one line naming the folder and what
to do), and `remove_stale_temps` cleans temp files a killed writer left behind.
No torch import: the analysis uses this module too.
"""

from __future__ import annotations

import errno
import io
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from backbone_lab.errors import user_facing

TEMP_SUFFIX = ".tmp"


@user_facing
class DiskFullError(OSError):
    """Not enough free space for a write; the message is one line naming the folder and the fix."""


@user_facing
class LinkedFolderError(OSError):
    """An output folder is a symbolic link; the message is one line naming it and the fix."""


def output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create `path` (and its parents) for outputs and return it; refuse it when it is a symlink
    (every output would land in the link's target, outside the run or sweep folder)."""
    path = Path(path)
    if path.is_symlink():
        raise LinkedFolderError(errno.ELOOP, f"{path}: the {what} is a symbolic link (to {os.readlink(path)}); "
                                             "remove the link (or pass another output folder) and rerun")
    path.mkdir(parents=True, exist_ok=True)
    return path


def temp_path(path: Path) -> Path:
    """A fresh temp name beside `path`: `.<name>.<pid>.<random>.tmp` (hidden, same folder)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename inside it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: str | os.PathLike, previous: str | os.PathLike | None = None) -> Iterator[BinaryIO]:
    """A binary file object whose content replaces `path` atomically and durably when the block
    ends without error (temp file in the same folder, fsync, `os.replace`, folder fsync).

    With `previous`, an existing `path` is first renamed to `previous` and removed only once the
    new file is durable: at every moment one intact copy exists under one of the two names.
    Raises `DiskFullError` (one line) when the disk fills up; the previous file is untouched and
    the temp file removed.
    """
    path = Path(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode & ~umask
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
            fsync_dir(path.parent)
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(err.errno, f"{path.parent}: disk full while writing {path.name}; "
                                           "free space (the previous file is intact) and rerun with resume=auto") from None
        raise
    fsync_dir(path.parent)
    if previous is not None:
        Path(previous).unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, chunks: Iterable[bytes | memoryview | np.ndarray]) -> Path:
    """Write `chunks` back to back into `path` atomically and durably (`atomic_file`); returns
    `path`. Numpy arrays are written from their buffers (no concatenated copy in memory)."""
    with atomic_file(path) as f:
        for chunk in chunks:
            f.write(memoryview(chunk).cast("B") if isinstance(chunk, np.ndarray) else chunk)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, [text.encode("utf-8")])


def atomic_write_json(path: str | os.PathLike, payload, **dump_kwargs) -> Path:
    return atomic_write_text(path, json.dumps(payload, **{"indent": 1, **dump_kwargs}))


def atomic_savefig(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Save a matplotlib figure to `path` through `atomic_write` (rendered in memory first; the
    format follows the suffix, PNG by default); returns `path`."""
    path = Path(path)
    buf = io.BytesIO()
    savefig_kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    fig.savefig(buf, **savefig_kwargs)
    return atomic_write(path, [buf.getbuffer()])


def open_append(path: str | os.PathLike, mode: str = "a", **open_kwargs):
    """`open(path, "a"|"ab")` that never follows a symlink: a link at `path` is removed first
    (its target is not ours), then the file is opened with O_NOFOLLOW."""
    path = Path(path)
    if path.is_symlink():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
    return os.fdopen(fd, mode, **open_kwargs)


def ensure_free_space(folder: str | os.PathLike, nbytes: int, what: str, margin: float = 1.1) -> None:
    """Raise `DiskFullError` unless `folder`'s file system has room for `nbytes` (× margin) more."""
    folder = Path(folder)
    probe = folder if folder.exists() else folder.parent
    free = shutil.disk_usage(probe).free
    if free < nbytes * margin:
        raise DiskFullError(errno.ENOSPC, f"{folder}: {free / 1e6:.1f} MB free, {what} needs "
                                          f"{nbytes / 1e6:.1f} MB; free space and rerun with resume=auto")


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the hidden temp files (`.*.tmp`) a killed writer left in `folder`; returns them.

    Only call this while holding the run folder's lock: then no live writer owns a temp file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.glob(f".*{TEMP_SUFFIX}"):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed
