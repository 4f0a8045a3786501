"""The schemas of the `objective` and `schedule` groups, without torch (the CLI checks a command
line against them before torch is imported); the math is in `backbone_lab.objective`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Optional


@dataclass
class ObjectiveConfig:
    """The composite objective L = L_LM + λ(t) L_probe (paper Eq. 1; `conf/objective/`)."""

    lambda_schedule: list[Any] = field(default_factory=lambda: [[0, 2.0]])
    """[[start_step, λ], ...], sorted, the first starting at step 0 or 1; λ(t) is the value of
    the last entry with start_step <= t (the paper: [[0, 2.0], [4000, 4.0]])."""

    def __post_init__(self) -> None:
        self.lambda_schedule = [list(p) for p in validate_lambda_schedule(self.lambda_schedule)]


@dataclass
class ScheduleConfig:
    """Learning-rate schedule: linear warmup, then cosine to a floor (PAPER_MAP §3; `conf/schedule/`)."""

    warmup: int = 100
    """Warmup steps (lr·t/warmup for t < warmup)."""
    total: Optional[int] = None
    """Step at which the cosine reaches its end; null = train.max_steps."""
    floor: float = 0.1
    """Lower clamp of the cosine multiplier (1.0 = constant lr after warmup)."""

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise ValueError(f"schedule.warmup must be >= 0, got {self.warmup}")
        if self.total is not None and self.total < 1:
            raise ValueError(f"schedule.total must be >= 1 or null, got {self.total}")
        if not 0.0 <= self.floor <= 1.0 or not math.isfinite(self.floor):
            raise ValueError(f"schedule.floor must be in [0, 1], got {self.floor}")


def validate_lambda_schedule(schedule: Sequence[Sequence[float]]) -> list[tuple[int, float]]:
    pairs = []
    for item in schedule:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError(f"objective.lambda_schedule entries must be [start_step, lambda], got {item!r}")
        try:
            pairs.append((int(item[0]), float(item[1])))
        except (TypeError, ValueError):
            raise ValueError(f"objective.lambda_schedule entry {list(item)!r} is not [integer step, number]") from None
        if not math.isfinite(pairs[-1][1]) or pairs[-1][1] < 0:
            raise ValueError(f"objective.lambda_schedule: lambda must be a finite number >= 0, got {item[1]!r}")
    starts = [s for s, _ in pairs]
    if not pairs or starts != sorted(starts) or starts[0] > 1:
        raise ValueError(
            f"lambda schedule {pairs} must be non-empty, sorted by start step and start at step 0 or 1"
        )
    return pairs
