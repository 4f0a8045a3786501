"""The paper's claims as checks on whatever runs are present: holds / does not hold / not testable here.

Each claim (`claim_file.Claim`, read from ``claims.yaml`` and any user claim file) names a metric
(`claim_metrics`), the runs it is about and the requirements a run must meet to test it
(`claim_selection`), and one expectation. `check_claims(runs, claims)` returns one `Verdict` per
claim with our numbers, the paper's, the runs used and the runs left out with their reasons.

*Not testable here* always says why: no run matches the selection ("runs missing"), every match
was left out (p_ood at chance, a diverged run, a flagged analysis, a metric the run did not
record), or too few remain for the check (an ordering needs two distinct values).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backbone_lab.compare.claim_file import Claim, Selection, selection_text
from backbone_lab.compare.claim_metrics import METRICS, ClaimContext, NotMeasured
from backbone_lab.compare.claim_selection import select, selector_value, unmet, value_matches
from backbone_lab.compare.runs import Run

HOLDS = "holds"
FAILS = "does not hold"
UNTESTABLE = "not testable here"


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    ours: str = ""
    why: str = ""
    used: list[str] = field(default_factory=list)

    def row(self) -> dict:
        c = self.claim
        return {"claim": c.id, "section": c.section, "verdict": self.verdict, "ours": self.ours,
                "expected": c.check.describe(METRICS[c.metric].unit), "paper": c.paper, "n_runs": len(self.used),
                "why": self.why, "metric": c.metric, "statement": c.statement, "runs": "; ".join(self.used)}


@dataclass
class Measured:
    values: list[tuple[Run, float | list[float]]]
    left_out: list[tuple[Run, str]]
    matched: int


def _label(run: Run) -> str:
    return run.label or run.name


def _fmt(v: float) -> str:
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        return f"{v:.4g}"
    return f"{v:.3g}"


def _show(v: float | list[float]) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return _fmt(v)


def _scalar(v: float | list[float]) -> float:
    return sum(v) / len(v) if isinstance(v, list) else v


def _measure(sel: Selection, claim: Claim, runs: list[Run], ctx: ClaimContext, exclude: set[int] = frozenset()) -> Measured:
    metric = METRICS[claim.metric]
    picked = [r for r in select(runs, sel.runs, ctx) if id(r) not in exclude]
    values, left = [], []
    for r in picked:
        if not r.ok:
            err = str(r.marker.get("error", "")).splitlines()[0][:80] if r.state in ("failed", "unreadable") else ""
            left.append((r, f"{r.state}{': ' + err if err else ''}"))
            continue
        why = unmet(r, list(sel.requires), ctx)
        if why is None:
            flagged = [f for f in r.summary.flags if f.get("code") in claim.unless_flags]
            why = f"analysis flag {flagged[0]['code']}: {flagged[0].get('message', '')}" if flagged else None
        if why is None:
            try:
                values.append((r, metric.value(r, ctx)))
                continue
            except NotMeasured as err:
                why = str(err)
        left.append((r, why))
    return Measured(values, left, len(picked))


def _sharing(runs: list[Run], m: Measured, keys: tuple[str, ...], ctx: ClaimContext) -> list[Run]:
    """The runs that share the values of `keys` with at least one measured run (all when no keys)."""
    if not keys:
        return runs
    wanted = [{k: selector_value(r, k, ctx) for k in keys} for r, _ in m.values]
    return [r for r in runs if any(all(value_matches(selector_value(r, k, ctx), w[k]) for k in keys) for w in wanted)]


def _missing(sel: Selection, m: Measured, what: str = "runs missing") -> str:
    if m.matched == 0:
        same = f" and the same {', '.join(sel.same)}" if sel.same else ""
        return f"{what}: no run with {selection_text(sel.runs)}{same}"
    return _reasons(m.left_out) or f"{what}: too few runs"


def _reasons(left_out: list[tuple[Run, str]]) -> str:
    """'run a, run b: reason; run c: other reason' (runs with the same reason named together)."""
    by_reason: dict[str, list[str]] = {}
    for r, why in left_out:
        label = _label(r)
        by_reason.setdefault(why, []).append(f"({label})" if ", " in label else label)
    return "; ".join(f"{', '.join(labels)}: {why}" for why, labels in by_reason.items())


def _left_out_note(*ms: Measured) -> str:
    items = _reasons([x for m in ms for x in m.left_out])
    return f"left out: {items}" if items else ""


def _aggregate(values: list[float], how: str) -> float:
    return {"mean": lambda v: sum(v) / len(v), "min": min, "max": max}[how](values)


def _band(claim: Claim, m: Measured) -> Verdict:
    chk = claim.check

    def ok(x: float) -> bool:
        return (chk.at_least is None or x >= chk.at_least) and (chk.at_most is None or x <= chk.at_most)

    ours = "; ".join(f"{_label(r)}: {_show(v)}" for r, v in m.values)
    if claim.aggregate in ("each", "any"):
        per_run = [all(ok(x) for x in (v if isinstance(v, list) else [v])) for _, v in m.values]
        holds = all(per_run) if claim.aggregate == "each" else any(per_run)
    else:
        agg = _aggregate([x for _, v in m.values for x in (v if isinstance(v, list) else [v])], claim.aggregate)
        ours = f"{claim.aggregate} {_fmt(agg)} ({ours})"
        holds = ok(agg)
    return Verdict(claim, HOLDS if holds else FAILS, ours)


def _compare(claim: Claim, m: Measured, other: Measured) -> Verdict:
    chk = claim.check
    above = chk.kind == "above"
    ref_vals = [_scalar(v) for _, v in other.values]
    mine = [_scalar(v) for _, v in m.values]
    if claim.aggregate in ("mean", "min", "max"):
        mine, ref = [_aggregate(mine, claim.aggregate)], _aggregate(ref_vals, claim.aggregate)
    else:  # each / any: against the other group's most demanding value
        ref = max(ref_vals) if above else min(ref_vals)
    bound = chk.factor * ref + (chk.margin if above else -chk.margin)
    passes = [(x > bound) if above else (x < bound) for x in mine]
    holds = any(passes) if claim.aggregate == "any" else all(passes)
    ours = ("; ".join(f"{_label(r)}: {_fmt(_scalar(v))}" for r, v in m.values) + " vs "
            + "; ".join(f"{_label(r)}: {_fmt(_scalar(v))}" for r, v in other.values))
    return Verdict(claim, HOLDS if holds else FAILS, ours)


def _order(claim: Claim, m: Measured, ctx: ClaimContext) -> Verdict:
    """An ordering along `key`, over the group means per key value; with `within`, separately in
    each group of runs sharing those selector values (a group with too few values is skipped)."""
    chk = claim.check
    groups: dict[tuple, list[tuple[Run, float]]] = {}
    for r, v in m.values:
        groups.setdefault(tuple(str(selector_value(r, k, ctx)) for k in chk.within), []).append((r, _scalar(v)))
    up = chk.kind == "increases_with"
    shown, verdicts, skipped = [], [], []
    for where, members in groups.items():
        by_key: dict[float, list[float]] = {}
        for r, v in members:
            by_key.setdefault(selector_value(r, chk.key, ctx), []).append(v)
        keys = sorted(by_key)
        means = [sum(by_key[k]) / len(by_key[k]) for k in keys]
        text = " → ".join(f"{chk.key} {k:g}: {_fmt(v)}" for k, v in zip(keys, means))
        name = ", ".join(f"{k}={w}" for k, w in zip(chk.within, where))
        shown.append(f"[{name}] {text}" if name and len(groups) > 1 else text)
        if len(keys) < claim.min_runs:
            skipped.append(f"{name + ': ' if name and len(groups) > 1 else ''}needs {claim.min_runs} distinct {chk.key} "
                           f"values, have {len(keys)}")
            continue
        steps = list(zip(means, means[1:]))
        verdicts.append(all((b >= a - chk.tolerance) if up else (b <= a + chk.tolerance) for a, b in steps))
    ours = "; ".join(shown)
    if not verdicts:
        return Verdict(claim, UNTESTABLE, ours, "; ".join(skipped))
    return Verdict(claim, HOLDS if all(verdicts) else FAILS, ours, "; ".join(f"skipped {x}" for x in skipped))


def check_claim(claim: Claim, runs: list[Run], ctx: ClaimContext | None = None) -> Verdict:
    """The verdict of one claim on these runs."""
    ctx = ctx or ClaimContext(runs)
    m = _measure(claim.selection, claim, runs, ctx)
    if claim.check.key:  # orderings: a run without a numeric value of the key cannot be placed
        keep = []
        for r, v in m.values:
            k = selector_value(r, claim.check.key, ctx)
            if isinstance(k, (int, float)) and not isinstance(k, bool):
                keep.append((r, v))
            else:
                m.left_out.append((r, f"no numeric {claim.check.key}"))
        m.values = keep
    needed = 1 if claim.check.kind.endswith("_with") else claim.min_runs
    if len(m.values) < needed:
        return Verdict(claim, UNTESTABLE, why=_missing(claim.selection, m))
    if claim.requires_some and not any(unmet(r, list(claim.requires_some), ctx) is None for r, _ in m.values):
        reasons = _reasons([(r, unmet(r, list(claim.requires_some), ctx)) for r, _ in m.values])
        return Verdict(claim, UNTESTABLE, why=f"needs at least one run with {', '.join(claim.requires_some)} — {reasons}",
                       used=[_label(r) for r, _ in m.values])
    if claim.check.kind == "band":
        v = _band(claim, m)
        notes = [m]
    elif claim.check.kind in ("above", "below"):
        other = _measure(claim.check.other, claim, _sharing(runs, m, claim.check.other.same, ctx), ctx,
                         exclude={id(r) for r, _ in m.values})
        if not other.values:
            return Verdict(claim, UNTESTABLE, why=_missing(claim.check.other, other, "runs to compare with missing"),
                           used=[_label(r) for r, _ in m.values])
        v = _compare(claim, m, other)
        notes = [m, other]
    else:
        v = _order(claim, m, ctx)
        notes = [m]
    v.used = [_label(r) for mm in notes for r, _ in mm.values]
    note = _left_out_note(*notes)
    v.why = "; ".join(x for x in (v.why, note) if x)
    return v


def check_claims(runs: list[Run], claims: list[Claim]) -> list[Verdict]:
    """Verdicts of every claim, in the claims' order (one context: source runs load once)."""
    ctx = ClaimContext(runs)
    return [check_claim(c, runs, ctx) for c in claims]


def verdict_counts(verdicts: list[Verdict]) -> dict[str, int]:
    out = {HOLDS: 0, FAILS: 0, UNTESTABLE: 0}
    for v in verdicts:
        out[v.verdict] += 1
    return out
