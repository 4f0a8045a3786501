"""Snapshots written off the training thread: a daemon thread behind a `TrajectoryWriter`.

The training thread only copies the tensors to host memory (`copy_to_host`): on a CUDA device
into pinned buffers with `non_blocking=True`, followed by an event recorded on the current
stream, so the copy overlaps the next steps' kernels; on the CPU a plain copy. The writer thread
waits for that event, then does everything else — conversion to the storage dtype, crc32, the
atomic fsync'ed file and the manifest (`TrajectoryWriter.encode` + `write`) — one snapshot at a
time, strictly in submission order. The bytes on disk are those a synchronous
`TrajectoryWriter.append` writes.

Back-pressure: one snapshot may be written while one more waits; `submit` blocks only when the
writer is more than one snapshot behind. Errors: the first exception of the thread is kept, later
snapshots are dropped, and the exception itself is raised on the training thread by the next
`submit`, `flush`, `raise_if_failed` or `close` — never lost, never a hang.

While snapshots are pending, a `TrajectoryReader` of the same folder in this process first waits
for them (`store.register_pending`): in-training readers (the diagnostics' reference directions)
see exactly the snapshots a synchronous writer would have left.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from backbone_lab.trajectory.store import TrajectoryWriter, register_pending, unregister_pending

_STOP = object()


def copy_to_host(named_tensors: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """Host copies of `name -> tensor/array` in the same order and dtypes, and the CUDA event
    that marks them complete (None when nothing was on a CUDA device).

    CUDA tensors: pinned buffers filled with `non_blocking=True` (returns before the copy ends;
    wait for the event before reading them). CPU tensors and numpy arrays: plain copies.
    """
    import torch

    host: dict[str, Any] = {}
    cuda_device = None
    for name, value in named_tensors.items():
        if isinstance(value, torch.Tensor):
            t = value.detach()
            if t.is_cuda:
                buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                buf.copy_(t, non_blocking=True)
                host[name], cuda_device = buf, t.device
            else:
                host[name] = t.clone()
        else:
            host[name] = np.array(value, copy=True)
    if cuda_device is None:
        return host, None
    ready = torch.cuda.Event()
    ready.record(torch.cuda.current_stream(cuda_device))
    return host, ready


class BackgroundSnapshotWriter:
    """Feeds a `TrajectoryWriter` from a daemon thread (see the module docstring).

    Args:
        writer: the trajectory writer; after construction only the writer thread touches it.
    """

    def __init__(self, writer: TrajectoryWriter):
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=1)  # + the one being written
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"snapshot-writer:{writer.path.name}", daemon=True)
        self._thread.start()
        register_pending(writer.path, self.flush)

    # ------------------------------------------------------------------ training thread
    def submit(self, step: int, named_tensors: Mapping[str, Any]) -> None:
        """Copy the snapshot of `step` to host memory and queue it (blocks while one snapshot is
        being written and another already waits). Raises the writer's error, if any."""
        self.raise_if_failed()
        if self._closed:
            raise RuntimeError(f"{self.writer.path}: snapshot writer is closed; submit before close()")
        host, ready = copy_to_host(named_tensors)
        self._queue.put((int(step), host, ready))

    def flush(self) -> None:
        """Wait until every submitted snapshot is durable on disk; raise the writer's error."""
        self._queue.join()
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        """Raise the exception that stopped the writer thread (the same object), if any."""
        if self._error is not None:
            raise self._error

    def close(self, raise_errors: bool = True) -> BaseException | None:
        """Flush, stop the thread and stop holding up readers; returns the writer's error (raised
        too unless `raise_errors=False`). Idempotent."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()
            unregister_pending(self.writer.path, self.flush)
        if raise_errors:
            self.raise_if_failed()
        return self._error

    @property
    def failed(self) -> bool:
        return self._error is not None

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if self._error is None:
                    step, host, ready = item
                    if ready is not None:
                        ready.synchronize()
                    self.writer.write(self.writer.encode(step, host))
            except BaseException as err:  # noqa: BLE001 - handed to the training thread
                self._error = err
            finally:
                self._queue.task_done()
