"""Which runs a claim is about (selectors) and when a run can test it (requirements).

Selectors read each run's saved, resolved ``config.yaml`` (never folder names or Hydra override
strings), so they work for any protocol, sweep or hand-picked set of runs:

| selector | value of a run |
|---|---|
| ``optimizer`` | short class name: AdamW, SGD, SGD+momentum, SGDW-Nesterov, Muon…, Lion, … (`grouping.optimizer_name`) |
| ``beta2`` | AdamW/Adam's second β (None for other optimizers) |
| ``lambda_switch`` | true when the λ schedule takes more than one value (paper: 2 → 4 at step 4,000) |
| ``reheating`` | true when the run starts from another run's weights (``init_from``) |
| ``source.<selector>`` | the selector on the reheating run's source run |
| ``schedule`` | the learning-rate schedule node (``schedule.*``) |
| ``lambda_schedule`` | the λ schedule (``objective.lambda_schedule``) |
| ``anchor`` | the analysis' anchor step (summary.json ``anchor_step``, else ``analysis.anchor_step``) |
| ``analysis`` | every analysis setting the run's analysis used (summary.json ``config``, presentation keys aside) |
| ``<dotted.config.key>`` | any key of the run's config, e.g. ``data.p_probe``, ``model.name`` |

The last four are the *protocol*: comparisons (`same`) and orderings (`within`) only put runs
together that agree on all of them (`PROTOCOL_KEYS`), unless a claim lists a key in `may_differ`
(e.g. the λ schedule of a constant-λ control).

A wanted value is a scalar (equal; floats to 1e-9), a list (any of them) or ``{min: , max: }``.

Requirements are named conditions a selected run must meet to *test* a claim; a run that fails
one is left out with the reason, and a claim left with too few runs is *not testable here*.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from backbone_lab.analysis.context import CHANCE_FACTOR, CHANCE_FLOOR
from backbone_lab.compare.claim_metrics import ClaimContext
from backbone_lab.compare.grouping import analysis_settings, optimizer_name
from backbone_lab.compare.paper_reference import same
from backbone_lab.compare.runs import Run, eval_best, val_loss_ends
from backbone_lab.compare.tables import beta2_of


# ----------------------------------------------------------------------------- selectors
def lambda_values(run: Run) -> list[tuple[int, float]]:
    """The λ schedule as [(from step, λ)] ([] when the config has none)."""
    return [(int(s), float(v)) for s, v in (run.cfg("objective.lambda_schedule") or [])]


def lambda_switch_step(run: Run) -> int | None:
    """First step at which λ changes (None for a constant λ)."""
    sched = lambda_values(run)
    for (_, prev), (step, lam) in zip(sched, sched[1:]):
        if not math.isclose(prev, lam):
            return step
    return None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def anchor_of(run: Run) -> Any:
    return run.summary.anchor_step if run.summary.anchor_step is not None else run.cfg("analysis.anchor_step")


SELECTORS: dict[str, Callable[[Run], Any]] = {
    "optimizer": lambda r: optimizer_name(r.config),
    "beta2": beta2_of,
    "lambda_switch": lambda r: lambda_switch_step(r) is not None,
    "reheating": lambda r: bool(r.cfg("init_from")),
    "schedule": lambda r: _canonical(r.cfg("schedule")),
    "lambda_schedule": lambda r: _canonical(r.cfg("objective.lambda_schedule")),
    "anchor": anchor_of,
    "analysis": lambda r: _canonical(analysis_settings(r)),
}
# selectors a comparison or ordering holds fixed by default (a claim may let some differ: `may_differ`)
PROTOCOL_KEYS = ("schedule", "lambda_schedule", "anchor", "analysis")


def selector_value(run: Run, key: str, ctx: ClaimContext) -> Any:
    """The value of selector `key` for `run` (see the module table)."""
    if key.startswith("source."):
        src = ctx.source_of(run)
        return None if src is None else selector_value(src, key[len("source."):], ctx)
    if key in SELECTORS:
        return SELECTORS[key](run)
    return run.cfg(key)


def is_known_selector(key: str) -> bool:
    key = key[len("source."):] if key.startswith("source.") else key
    return key in SELECTORS or "." in key or key in ("seed", "init_from")


def value_matches(have: Any, want: Any) -> bool:
    if isinstance(want, dict):
        if not isinstance(have, (int, float)) or isinstance(have, bool):
            return False
        lo, hi = want.get("min"), want.get("max")
        return (lo is None or have >= lo - 1e-12) and (hi is None or have <= hi + 1e-12)
    if isinstance(want, list) and not (isinstance(have, list) and same(have, want)):
        return any(value_matches(have, w) for w in want)
    if isinstance(want, bool) or isinstance(have, bool):
        return have is want or have == want
    return same(have, want)


def select(runs: list[Run], wanted: dict[str, Any], ctx: ClaimContext) -> list[Run]:
    """The runs whose selector values match every entry of `wanted`."""
    return [r for r in runs if all(value_matches(selector_value(r, k, ctx), v) for k, v in wanted.items())]


# ----------------------------------------------------------------------------- requirements
def chance_threshold(run: Run) -> tuple[float, str]:
    """p_ood at or below this is chance level (the analysis' rule, `analysis.context`)."""
    configured = run.summary.config.get("chance_p_ood")
    if configured is not None:
        return float(configured), f"chance_p_ood={configured}"
    n = run.get("eval_metrics.n_codewords")
    if n:
        return max(CHANCE_FACTOR / n, CHANCE_FLOOR), f"{CHANCE_FACTOR:g}/{n} codewords"
    return CHANCE_FLOOR, f"{CHANCE_FLOOR:g}"


def _finished(run: Run, ctx: ClaimContext) -> str | None:
    if run.state == "diverged":
        return f"diverged at step {run.marker.get('diverged_at_step')}"
    return None


MIN_VAL_LOSS_DROP = 0.1
"""nats/token: a run whose validation loss fell by less than this did not learn (the SGD control
of the paper's protocol goes 6.25 -> 6.24), so claims about a trained model leave it out."""


def _learned(run: Run, ctx: ClaimContext) -> str | None:
    first, last = val_loss_ends(run)
    if not (math.isfinite(first) and math.isfinite(last)):
        return "no validation loss to tell whether it learned"
    if first - last < MIN_VAL_LOSS_DROP:
        return (f"did not learn: val loss {first:.3g} → {last:.3g} (drop {first - last:.3g} < "
                f"{MIN_VAL_LOSS_DROP:g} nats/token)")
    return None


def _trained(run: Run, ctx: ClaimContext) -> str | None:
    return _finished(run, ctx) or _learned(run, ctx)


MAX_SHRINKAGE_COS = 0.95
"""|cos(v_b, θ(anchor))| at or above this: the backbone is weight decay shrinking the anchor
weights (the paper protocol's SGD control: 1.000), not a direction the optimizer found."""


def _backbone_not_shrinkage(run: Run, ctx: ClaimContext) -> str | None:
    cos = run.get("shrinkage_cos")
    if isinstance(cos, (int, float)) and abs(cos) >= MAX_SHRINKAGE_COS:
        return (f"backbone is weight-decay shrinkage of θ(anchor): |cos(v_b, θ(anchor))| = {abs(cos):.3f} "
                f"≥ {MAX_SHRINKAGE_COS:g}")
    return None


def _probe_learned(run: Run, ctx: ClaimContext) -> str | None:
    best = eval_best(run, "p_ood")[0]
    if not math.isfinite(best):
        return "no p_ood evaluations"
    t, rule = chance_threshold(run)
    if best <= t:
        return f"p_ood at chance (best {best:.3f} ≤ {t:.3f} = {rule})"
    return None


def _phase_boundary_at_switch(run: Run, ctx: ClaimContext) -> str | None:
    switch = lambda_switch_step(run)
    boundary = run.get("phases.boundary_step")
    if switch is None:
        return "constant λ: no reweighting to split the phases at"
    if boundary is None:
        return "no phase backbones in the analysis"
    if int(boundary) != switch:
        return f"phase boundary {boundary} is not the λ switch {switch} (set analysis.phase_boundary={switch})"
    return None


def _source_left_probe(run: Run, ctx: ClaimContext) -> str | None:
    src = ctx.source_of(run)
    if src is None:
        return f"reheating source {run.cfg('init_from')!r} not found" if run.cfg("init_from") else "not a reheating run"
    why = _probe_learned(src, ctx)
    if why:
        return f"source never learned the probe ({why})"
    best = eval_best(src, "p_ood")[0]
    start = next((v for v in run.eval.get("p_ood", []) if math.isfinite(v)), math.nan)
    if not start <= 0.5 * best:
        return (f"reheating starts at p_ood {start:.3f}, not below half the source's best {best:.3f}: "
                "the source never left the probe regime, so there is nothing to re-enter")
    return None


REQUIREMENTS: dict[str, tuple[Callable[[Run, ClaimContext], str | None], str]] = {
    "finished": (_finished, "the run finished (did not diverge)"),
    "learned": (_learned, f"the validation loss fell by at least {MIN_VAL_LOSS_DROP:g} nats/token"),
    "trained": (_trained, f"finished (did not diverge) and learned: val loss fell by ≥ {MIN_VAL_LOSS_DROP:g} nats/token"),
    "backbone_not_shrinkage": (_backbone_not_shrinkage, f"the backbone is not weight decay shrinking θ(anchor): "
                                                        f"|cos(v_b, θ(anchor))| < {MAX_SHRINKAGE_COS:g} (summary "
                                                        "`shrinkage_cos`; passes when the analysis has none)"),
    "probe_learned": (_probe_learned, "best p_ood above chance (max(3 / n_codewords, 0.02), as the analysis)"),
    "phase_boundary_at_lambda_switch": (_phase_boundary_at_switch,
                                        "λ changes during the run and the phase backbones split at that step"),
    "reheat_source_left_probe": (_source_left_probe, "the reheating source learned the probe and the reheating "
                                                     "starts below half its best p_ood (a probe regime to re-enter)"),
}


def unmet(run: Run, requirements: list[str], ctx: ClaimContext) -> str | None:
    """The first unmet requirement's reason, or None."""
    for name in requirements:
        why = REQUIREMENTS[name][0](run, ctx)
        if why:
            return why
    return None
