"""Which stored snapshots the analysis uses, and why the others are left out (PAPER_MAP §5.0, W10).

Rows of the drift matrix are weighted by how often a run stored snapshots, so a denser cadence
in part of a run (the β2 runs' 600–2000 every 50 on top of every 200) over-weights that part in
the global PCA (W10). The default keeps a *uniform* cadence only where the run has one:

* **regular base cadence plus dense ranges** (the paper's case, our runs): the base cadence c is
  the largest step spacing that occurs at least twice; when every multiple of c between the first
  and the last of them is stored, and every other step sits closer than c to a stored neighbour
  (a denser range, e.g. [600, 2000] every 50, or step 1 before 25, 50, ...), the analysis keeps
  the anchor and the multiples of c and drops the others (they are listed with the reason);
* **anything else** (irregular steps written by another training loop, a base grid with holes):
  every stored snapshot is used (cadence 0).

`cadence=0` always uses every stored step; `cadence=N` keeps the multiples of N. Steps before the
anchor, after `max_step` or in `exclude_steps` are left out too. Every dropped step is recorded in
`StepSelection.dropped` with its reason; summary.json and the report show them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from backbone_lab.trajectory.store import TrajectoryError

# a base cadence needs at least this many multiples after the anchor (else: every stored step)
MIN_BASE_STEPS = 3


@dataclass
class StepSelection:
    """The analysed steps of a run and the accounting of the stored ones.

    Attributes:
        steps: analysed steps, the anchor first, then increasing.
        anchor: the drift reference step.
        cadence: the uniform cadence used (0 = every stored step after the anchor).
        rule: one sentence saying how the steps were chosen.
        stored: every stored step.
        dropped: reason -> stored steps left out for that reason (in order of the rules).
    """

    steps: list[int]
    anchor: int
    cadence: int
    rule: str
    stored: list[int]
    dropped: dict[str, list[int]] = field(default_factory=dict)

    @property
    def rows(self) -> list[int]:
        """The drift rows: analysed steps after the anchor."""
        return self.steps[1:]

    @property
    def n_dropped(self) -> int:
        return sum(len(v) for v in self.dropped.values())

    def record(self) -> dict:
        """The `selection` block of summary.json."""
        return {
            "n_stored": len(self.stored),
            "n_used": len(self.steps),
            "n_dropped": self.n_dropped,
            "cadence": self.cadence,
            "rule": self.rule,
            "dropped": [{"reason": r, "n": len(s), "steps": list(s)} for r, s in self.dropped.items()],
        }


def auto_cadence(steps: Sequence[int]) -> int:
    """Largest step spacing that occurs at least twice (0 = no spacing repeats)."""
    d = Counter(int(b - a) for a, b in zip(steps[:-1], steps[1:]))
    rep = [k for k, v in d.items() if v >= 2 and k > 0]
    return max(rep) if rep else 0


def base_cadence_layout(steps: Sequence[int]) -> tuple[int, str | None]:
    """(c, None) when `steps` are a complete grid of multiples of c plus denser extras, else
    (c or 0, the reason they are not)."""
    c = auto_cadence(steps)
    if c == 0:
        return 0, "no step spacing occurs twice"
    grid = [s for s in steps if s % c == 0]
    if len(grid) < MIN_BASE_STEPS:
        return c, f"only {len(grid)} stored steps are multiples of the most common large spacing {c}"
    have = set(steps)
    holes = [s for s in range(grid[0], grid[-1] + 1, c) if s not in have]
    if holes:
        more = "" if len(holes) <= 5 else f" (+{len(holes) - 5} more)"
        return c, f"multiples of {c} between {grid[0]} and {grid[-1]} are missing: {holes[:5]}{more}"
    ordered = sorted(have)
    lonely = []
    for i, s in enumerate(ordered):
        if s % c == 0:
            continue
        gaps = [abs(s - ordered[j]) for j in (i - 1, i + 1) if 0 <= j < len(ordered)]
        if not gaps or min(gaps) >= c:
            lonely.append(s)
    if lonely:
        return c, f"steps {lonely[:5]} are off the cadence {c} without a denser neighbourhood"
    return c, None


def select_steps(stored: Sequence[int], anchor_step: int | None = None, cadence: int | None = None,
                 exclude_steps: Sequence[int] = (), max_step: int | None = None) -> StepSelection:
    """The analysed steps (anchor first) with the reason for every stored step left out.

    Args:
        stored: the stored steps (any order).
        anchor_step: drift reference; None = the first kept step.
        cadence: None = auto (see the module docstring), 0 = every step, N = multiples of N.
        exclude_steps: steps never used (e.g. a corrupt snapshot).
        max_step: ignore later steps.
    Raises:
        TrajectoryError: the anchor is not a usable stored step, or fewer than 2 rows remain.
    """
    stored = sorted(int(s) for s in stored)
    ex = {int(s) for s in exclude_steps}
    dropped: dict[str, list[int]] = {}

    def drop(reason: str, steps: list[int]) -> None:
        if steps:
            dropped.setdefault(reason, []).extend(steps)

    drop("listed in exclude_steps", [s for s in stored if s in ex])
    if max_step is not None:
        drop(f"after max_step={max_step}", [s for s in stored if s not in ex and s > max_step])
    kept = [s for s in stored if s not in ex and (max_step is None or s <= max_step)]
    if not kept:
        raise TrajectoryError("no snapshot left after exclude_steps/max_step; relax the selection")
    anchor = kept[0] if anchor_step is None else int(anchor_step)
    if anchor not in kept:
        raise TrajectoryError(f"anchor_step={anchor} is not a stored (non-excluded) step; stored: {kept[:5]}...")
    drop(f"before the anchor step {anchor}", [s for s in kept if s < anchor])
    after = [s for s in kept if s > anchor]

    if cadence is not None and int(cadence) > 0:
        cad = int(cadence)
        sel = [s for s in after if s % cad == 0]
        drop(f"not a multiple of cadence={cad} (cadence=0 uses every stored step)", [s for s in after if s % cad])
        rule = f"multiples of cadence={cad} (configured)"
    elif cadence is not None:
        cad, sel = 0, after
        rule = "every stored step (cadence=0)"
    else:
        base, why_not = base_cadence_layout(after)
        if why_not is None:
            cad = base
            sel = [s for s in after if s % cad == 0]
            extra = [s for s in after if s % cad]
            drop(f"off the base cadence {cad} (denser extra steps; uniform rows; cadence=0 keeps them)", extra)
            rule = (f"base cadence {cad}: every multiple of {cad} is stored"
                    + ("; the denser extra steps are left out so that rows are uniform in time" if extra else ""))
        else:
            cad, sel = 0, after
            rule = f"every stored step (no regular base cadence: {why_not})"
    if len(sel) < 2:
        hint = " (set cadence=0?)" if cad > 0 else ""
        raise TrajectoryError(f"only {len(sel)} snapshot(s) after the anchor {anchor} at cadence {cad}; need >= 2{hint}")
    return StepSelection(steps=[anchor] + sel, anchor=anchor, cadence=cad, rule=rule, stored=stored, dropped=dropped)
