"""``<run>/execution.json``: the execution details that change results without changing the config.

Two bit-identical configs can give different trajectories with a different thread count (float
reduction order), torch version, device, precision or determinism setting (docs/EXPERIMENTS.md:
the β2 = 0 twin depends on the thread count). Rank 0 writes this record when training starts
(a resume overwrites it with the resumed execution's details); compare reads it beside the config.

Keys: ``torch_threads``, ``torch_interop_threads``, ``torch_version``, ``lightning_version``,
``numpy_version``, ``python_version``, ``platform``, ``accelerator``, ``device``, ``device_name``,
``cuda_version``, ``precision``, ``default_dtype``, ``deterministic`` (torch deterministic
algorithms on), ``cudnn_deterministic``, ``cudnn_benchmark``, ``world_size``, ``num_nodes``,
``written_at`` (UTC, ISO 8601).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

from backbone_lab.durable import atomic_write_json
from backbone_lab.run_dir import RunDir


def _safe(fn, default: Any = None) -> Any:
    try:
        return fn()
    except Exception:  # a detail that cannot be read is recorded as unknown, never fatal
        return default


def execution_record(trainer=None) -> dict:
    """The execution details of this process (and of `trainer`, a Lightning Trainer, when given)."""
    import numpy
    import torch

    rec: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": _safe(torch.get_num_interop_threads),
        "torch_version": torch.__version__,
        "lightning_version": _safe(lambda: __import__("lightning").__version__),
        "numpy_version": numpy.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "default_dtype": str(torch.get_default_dtype()).replace("torch.", ""),
        "deterministic": bool(torch.are_deterministic_algorithms_enabled()),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cuda_version": torch.version.cuda,
        "accelerator": None, "device": None, "device_name": None,
        "precision": None, "world_size": 1, "num_nodes": 1,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if trainer is not None:
        rec["accelerator"] = _safe(lambda: type(trainer.accelerator).__name__.replace("Accelerator", "").lower())
        rec["device"] = _safe(lambda: str(trainer.strategy.root_device))
        rec["precision"] = _safe(lambda: str(trainer.precision))
        rec["world_size"] = _safe(lambda: int(trainer.world_size), 1)
        rec["num_nodes"] = _safe(lambda: int(trainer.num_nodes), 1)
        if rec["device"] and rec["device"].startswith("cuda"):
            rec["device_name"] = _safe(lambda: torch.cuda.get_device_name(trainer.strategy.root_device))
    if rec["device_name"] is None:
        rec["device_name"] = platform.processor() or platform.machine()
    return rec


def write_execution_record(run: RunDir | str | Path, trainer=None) -> Path:
    """Write ``<run>/execution.json`` atomically (backbone_lab.durable); returns its path."""
    return atomic_write_json(RunDir(run).execution, execution_record(trainer), indent=2)
