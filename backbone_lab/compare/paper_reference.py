"""The paper's numbers (``paper_values.json``) and the protocol a run must follow to be compared.

The numbers live in a data file (sources in its ``about`` fields: PAPER_MAP §4.1–4.3, §5.13); this
module loads them into lookup tables and says, as config keys of *our* runs, which settings a
run needs for a paper value to be shown beside it (``PaperRef``): model, data, optimizer,
schedule, steps, seed. *Noted* settings that differ (the paper's val loss included EOS padding,
the reference's β2 sweep ran p_probe 0.20) are listed, not required.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAPER_VALUES_FILE = Path(__file__).with_name("paper_values.json")


def _load() -> dict:
    return json.loads(PAPER_VALUES_FILE.read_text())


_DOC = _load()
TABLE4: dict[str, dict] = _DOC["table4_sgd_controls"]["arms"]  # arm -> values
TABLE5: dict[tuple[str, tuple[int, ...]], dict] = {  # (arm, window steps) -> values
    (r["arm"], tuple(r["steps"])): {k: v for k, v in r.items() if k not in ("arm", "steps")} for r in _DOC["table5_windows"]["rows"]}
BETA2: dict[float, dict] = {r["beta2"]: {k: v for k, v in r.items() if k != "beta2"} for r in _DOC["beta2_sweep"]["by_beta2"]}
REHEAT: dict[float, dict] = {r["lr"]: {k: v for k, v in r.items() if k != "lr"} for r in _DOC["table6_reheating"]["by_lr"]}


# ----------------------------------------------------------------------------- protocol
PAPER_MAIN = {"model.name": "paper", "data.source": "tinystories", "seed": 42, "data.micro_batch_size": 64,
              "train.accumulate": 2, "train.grad_clip": 1.0, "schedule.floor": 0.1}
PAPER_4K = {**PAPER_MAIN, "train.max_steps": 4000, "schedule.warmup": 1500, "schedule.total": 4000,
            "train.eval_every": 200}
PADDING_NOTE = {"data.mask_padding": False}  # the paper's val loss included EOS padding (W6)

ADAMW_A = {"optimizer._target_": "torch.optim.AdamW", "optimizer.lr": 1e-3, "optimizer.betas": [0.9, 0.95],
           "optimizer.weight_decay": 0.5}
SGD_ARMS: dict[str, dict[str, Any]] = {
    "A": ADAMW_A,
    "B": {"optimizer._target_": "torch.optim.SGD", "optimizer.lr": 1e-3, "optimizer.momentum": 0.0,
          "optimizer.weight_decay": 0.5},
    "C": {"optimizer._target_": "torch.optim.SGD", "optimizer.lr": 1e-2, "optimizer.momentum": 0.9,
          "optimizer.weight_decay": 0.05},
    "C'": {"optimizer._target_": "backbone_lab.optim.SGDW", "optimizer.lr": 1e-2, "optimizer.momentum": 0.9,
           "optimizer.nesterov": True, "optimizer.weight_decay": 0.5},
}
BETA2_PROTOCOL = {**PAPER_4K, "optimizer._target_": "torch.optim.AdamW", "optimizer.lr": 1e-3,
                  "optimizer.weight_decay": 0.5, "analysis.anchor_step": 1}
BETA2_NOTED = {"data.p_probe": 0.2, **PADDING_NOTE}
REHEAT_PROTOCOL = {**PAPER_MAIN, "train.max_steps": 2000, "schedule.warmup": 200, "optimizer._target_": "torch.optim.AdamW",
                   "objective.lambda_schedule": [[0, 4.0]]}


def same(have: Any, want: Any) -> bool:
    """Config value equality: lists element-wise, floats to 1e-9 relative."""
    if isinstance(want, (list, tuple)):
        return isinstance(have, (list, tuple)) and len(have) == len(want) and all(same(h, w) for h, w in zip(have, want))
    if isinstance(want, float) or isinstance(have, float):
        try:
            return math.isclose(float(have), float(want), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return have == want


@dataclass
class PaperRef:
    """Paper values of one row, valid for runs whose config has the `required` values.

    `match(run)` needs only ``run.cfg(dotted_key)``.
    """

    values: dict[str, Any]
    required: dict[str, Any]
    noted: dict[str, Any] = field(default_factory=dict)

    def match(self, run) -> tuple[bool, list[str]]:
        for key, want in self.required.items():
            if not same(run.cfg(key), want):
                return False, [f"{key}={run.cfg(key)!r} (paper {want!r})"]
        notes = [f"paper {k}={v!r}" for k, v in self.noted.items() if not same(run.cfg(k), v)]
        return True, notes
