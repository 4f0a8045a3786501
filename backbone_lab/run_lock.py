"""One writer per run folder: an exclusive `fcntl` lock on `<run>/.lock`, held for the whole run
by the process that writes it (rank 0). A second process asking for the same folder is refused
in one line with the holder's pid, instead of two runs interleaving their snapshots."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager

from backbone_lab.errors import RunDirError
from backbone_lab.run_dir import RunDir


@contextmanager
def run_lock(run: RunDir):
    run.root.mkdir(parents=True, exist_ok=True)
    if run.lock.is_symlink():  # a planted link: the lock file is ours, its target is not (never truncated)
        run.lock.unlink()
    fd = os.open(run.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RunDirError(f"{run.root} is being written by another process (pid {holder}); wait for it "
                              "to finish, or choose another run_name") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
