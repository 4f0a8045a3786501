"""Independent subprocesses of a test module started side by side, each test reading its own.

Most of a short `python -m backbone_lab ...` is importing torch and Lightning (~5 s of one core):
a batch of them runs on every core at once instead of one after the other. A module-scoped
fixture submits the processes of the tests that the session selected (`selected_items`); each test
waits for its own result (`ProcessBatch.result`) and asserts on it as if it had run the process.
Every process inherits the suite's OMP_NUM_THREADS=1 (tests/conftest.py): side by side, they do
not fight for the cores with threads."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor

import pytest


def parallel_slots() -> int:
    """How many processes run at once: one per core, at least 2, at most 4 (each holds ~0.5 GB)."""
    return min(4, max(2, os.cpu_count() or 1))


def selected_items(request: pytest.FixtureRequest) -> list[pytest.Item]:
    """The requesting module's tests that this session runs, in order (`-k`, `-m "not slow"` leave
    others out): a batch starts only the processes of selected tests. `item.name` is `test_x` or
    `test_x[id]` (the key a test reads its result under: `request.node.name`), `item.originalname`
    is `test_x`, `item.callspec.params` holds a parametrized test's arguments."""
    module = request.node.nodeid.split("::")[0]
    return [item for item in request.session.items if item.nodeid.split("::")[0] == module]


class ProcessBatch:
    """subprocess.run(argv, capture_output=True, text=True, **kwargs) for each submitted key, at
    most `slots` at a time, in submission order."""

    def __init__(self, slots: int | None = None):
        self._pool = ThreadPoolExecutor(max_workers=slots or parallel_slots(), thread_name_prefix="process-batch")
        self._runs: dict[str, Future] = {}

    def submit(self, key: str, fn, *args, **kwargs) -> None:
        """Run `fn(*args, **kwargs)` (a function that starts and waits for processes) in the batch."""
        assert key not in self._runs, key
        self._runs[key] = self._pool.submit(fn, *args, **kwargs)

    def run(self, key: str, argv: list[str], **kwargs) -> None:
        """Start `argv` in the batch; `result(key)` is its CompletedProcess (stdout, stderr as text)."""
        self.submit(key, subprocess.run, argv, capture_output=True, text=True, **kwargs)

    def result(self, key: str):
        return self._runs[key].result()

    def close(self) -> None:
        """Wait for whatever is still running (a test that failed early leaves nothing behind)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def start_side_by_side(request: pytest.FixtureRequest, tmp_path_factory, starters: dict, *extra) -> ProcessBatch:
    """A batch that runs `starters[test](item, folder, *extra)` for every selected test of the
    requesting module named in `starters` (a fresh folder each), in the order of `starters`; the
    result of a test is under its `request.node.name`."""
    items = selected_items(request)
    batch = ProcessBatch()
    for name, start in starters.items():
        for item in items:
            if item.originalname == name:
                batch.submit(item.name, start, item, tmp_path_factory.mktemp("side_by_side"), *extra)
    return batch


def side_by_side(fn, *calls: tuple) -> list:
    """[fn(*args) for args in calls], the calls running side by side (`parallel_slots` at a time):
    for one test's independent processes."""
    with ThreadPoolExecutor(max_workers=parallel_slots(), thread_name_prefix="side-by-side") as pool:
        return list(pool.map(lambda args: fn(*args), calls))
