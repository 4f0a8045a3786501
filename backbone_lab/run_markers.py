"""Job state markers in a run folder: `DONE` (headline numbers) or `FAILED` (the error).

A sweep reads them to report job states and to skip finished jobs when it is re-run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from backbone_lab.durable import atomic_write_text

MARKERS = ("DONE", "FAILED", "INTERRUPTED")


def write_marker(run_dir: str | Path, name: str, payload: dict) -> Path:
    """Atomically write `<run_dir>/<name>` (JSON) and remove the other marker."""
    if name not in MARKERS:
        raise ValueError(f"marker must be one of {MARKERS}, got {name!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / name, json.dumps(payload, indent=2, default=_jsonable))
    for other in MARKERS:
        if other != name:
            (run_dir / other).unlink(missing_ok=True)
    return run_dir / name


def read_marker(run_dir: str | Path) -> tuple[str, dict] | None:
    """('DONE'|'FAILED', payload) or None when the run has no marker (running or killed)."""
    for name in MARKERS:
        path = Path(run_dir) / name
        if path.exists():
            try:
                return name, json.loads(path.read_text())
            except json.JSONDecodeError:
                return name, {}
    return None


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
