"""The paper's claims as checks on whatever runs are present: holds / does not hold / fragile /
not testable here.

Each claim (`claim_file.Claim`, read from ``claims.yaml`` and any user claim file) names a metric
(`claim_metrics`), the runs it is about and the requirements a run must meet to test it
(`claim_selection`), and one expectation. `check_claims(runs, claims)` returns one `Verdict` per
claim with our numbers, the paper's, the runs used and the runs left out with their reasons.

Seeds are an axis. A claim is judged per seed, inside each *seed group* (runs that differ only in
their seed, `grouping.seed_group_key`), then overall:

* **holds** — it holds for every seed of every group;
* **does not hold** — some group has no seed for which it holds;
* **fragile** — every group has a seed for which it holds, but not all seeds do ("2 of 3 seeds");
* **not testable here** — no run can test it, always with the reason.

Bands are checked per run. With `beyond_null: above|below` a run must also lie beyond its own null band
(the analysis' random walk with the same increment norms, summary.json ``null_baseline``); the
paper's band is then the secondary column `paper_band`, and a run without a null is left out
("no null available"). Comparisons (`above` / `below`) pair each run with the control runs that
share its `same` selectors and the protocol (`claim_selection.PROTOCOL_KEYS`) — the control of
the same seed when there is one, else the most demanding matched control. Orderings (`increases_with` / `decreases_with`) pair seeds across the key's
values: per seed, the change from the lowest to the highest key value must reach `min_effect` in
the claimed direction (a flat or reversed trend fails) and no adjacent step may go the wrong way
by more than `tolerance`; the `effect` column gives the mean per-seed change with its 95 % t
interval and the paired effect size d_z = mean / sd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from backbone_lab.compare.claim_file import Claim, Selection, selection_text
from backbone_lab.compare.claim_metrics import METRICS, ClaimContext, NotMeasured, null_entry
from backbone_lab.compare.claim_selection import PROTOCOL_KEYS, REQUIREMENTS, select, selector_value, unmet, value_matches
from backbone_lab.compare.grouping import seed_group_key
from backbone_lab.compare.runs import Run
from backbone_lab.compare.seed_groups import execution_differences
from backbone_lab.compare.seed_stats import ONE_SEED, effect_size, seed_interval

HOLDS = "holds"
FAILS = "does not hold"
FRAGILE = "fragile"
UNTESTABLE = "not testable here"
VERDICTS = (HOLDS, FRAGILE, FAILS, UNTESTABLE)


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    ours: str = ""
    why: str = ""
    used: list[str] = field(default_factory=list)
    seeds: str = ""       # "k of n seeds" per seed group
    effect: str = ""      # orderings / comparisons: mean per-seed difference [95 % t interval], d_z
    paper_band: str = ""  # null-relative claims: the verdict of the paper's absolute band
    null: str = ""        # null-relative claims: the null's mean and band

    def row(self) -> dict:
        c = self.claim
        unit = METRICS[c.metric].unit
        expected = c.check.describe(unit)
        if c.null:
            expected = f"{c.null} the null band (paper band: {expected})"
        requires = [*c.selection.requires, *(c.check.other.requires if c.check.other else ())]
        return {"claim": c.id, "section": c.section, "verdict": self.verdict, "seeds": self.seeds, "ours": self.ours,
                "expected": expected, "effect": self.effect, "null": self.null, "paper_band": self.paper_band,
                "paper": c.paper, "n_runs": len(self.used), "why": self.why, "metric": c.metric,
                "requires": "; ".join(f"{r}: {REQUIREMENTS[r][1]}" for r in dict.fromkeys(requires)),
                "statement": c.statement, "runs": "; ".join(self.used)}


@dataclass
class Measured:
    values: list[tuple[Run, float | list[float]]]
    left_out: list[tuple[Run, str]]
    matched: int


def _label(run: Run) -> str:
    return run.label or run.name


def _group_label(run: Run) -> str:
    return run.group or _label(run)


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
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


def _protocol(keys: tuple[str, ...], may_differ: tuple[str, ...]) -> tuple[str, ...]:
    """`keys` plus the protocol selectors a claim does not let differ."""
    return tuple(dict.fromkeys([*keys, *(k for k in PROTOCOL_KEYS if k not in may_differ)]))


def _matches(a: Run, b: Run, keys: tuple[str, ...], ctx: ClaimContext) -> bool:
    return all(value_matches(selector_value(b, k, ctx), selector_value(a, k, ctx)) for k in keys)


def _sharing(runs: list[Run], m: Measured, keys: tuple[str, ...], ctx: ClaimContext) -> list[Run]:
    """The runs that share the values of `keys` with at least one measured run."""
    return [o for o in runs if any(_matches(r, o, keys, ctx) for r, _ in m.values)]


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


# ----------------------------------------------------------------------------- seeds -> verdict
def seed_verdict(outcomes: dict[str, list[bool]]) -> tuple[str, str]:
    """(verdict, 'k of n seeds' text) from per-seed outcomes of each seed group (see the module doc)."""
    if not outcomes:
        return UNTESTABLE, ""
    per_group, texts = [], []
    for group, oks in outcomes.items():
        k, n = sum(oks), len(oks)
        per_group.append(HOLDS if k == n else FAILS if k == 0 else FRAGILE)
        text = f"{ONE_SEED}: {'holds' if k else 'does not hold'}" if n == 1 else f"{k} of {n} seeds"
        texts.append(f"[{group}] {text}" if len(outcomes) > 1 else text)
    verdict = FAILS if FAILS in per_group else FRAGILE if FRAGILE in per_group else HOLDS
    return verdict, "; ".join(texts)


def _by_group(items: list[tuple[Run, bool]]) -> dict[str, list[bool]]:
    """Outcomes per seed group (runs differing only in the seed), keyed by the group's label."""
    keys: dict[str, str] = {}
    out: dict[str, list[bool]] = {}
    for r, ok in items:
        label = keys.setdefault(seed_group_key(r), _group_label(r))
        out.setdefault(label, []).append(ok)
    return out


def _values_text(values: list[tuple[Run, float | list[float]]]) -> str:
    """Per seed group: 'group: mean [lo, hi] (n=3) — label: v; ...' (or 'label: v (one seed)')."""
    groups: dict[str, list[tuple[Run, float | list[float]]]] = {}
    for r, v in values:
        groups.setdefault(seed_group_key(r), []).append((r, v))
    parts = []
    for members in groups.values():
        g = _group_label(members[0][0])
        if len(members) == 1:
            r, v = members[0]
            parts.append(f"{_label(r)}: {_show(v)}")
            continue
        ci = seed_interval([_scalar(v) for _, v in members])
        seeds = ", ".join(f"{_show(v)}" for _, v in members)
        parts.append(f"{g}: {ci.text(_fmt)} — seeds {seeds}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- bands and the null
def _null_entry(run: Run, claim: Claim, block_name: str = "metrics") -> dict | None:
    """The claim metric's entry of the run's null baseline (`metrics`: the random walk; `shuffled`:
    the same increments in random order), None when the analysis has none."""
    return null_entry(run, claim.metric, block_name)


def _band(claim: Claim, m: Measured) -> Verdict:
    chk = claim.check

    def ok(x: float | list[float]) -> bool:
        xs = x if isinstance(x, list) else [x]
        return all((chk.at_least is None or v >= chk.at_least) and (chk.at_most is None or v <= chk.at_most) for v in xs)

    ours = _values_text(m.values)
    if claim.aggregate in ("mean", "min", "max"):
        agg = _aggregate([x for _, v in m.values for x in (v if isinstance(v, list) else [v])], claim.aggregate)
        holds = ok(agg)
        return Verdict(claim, HOLDS if holds else FAILS, f"{claim.aggregate} {_fmt(agg)} ({ours})",
                       seeds=f"{claim.aggregate} over {len(m.values)} runs")
    band = [(r, ok(v)) for r, v in m.values]
    if claim.aggregate == "any":
        k = sum(o for _, o in band)
        return Verdict(claim, HOLDS if k else FAILS, ours, seeds=f"any: {k} of {len(band)} runs")
    verdict, seeds = seed_verdict(_by_group(band))
    if not claim.null:
        return Verdict(claim, verdict, ours, seeds=seeds)
    # relative to the null: each run beyond its own null band; the paper's band is secondary
    beyond, no_null, nulls = [], [], []
    for r, v in m.values:
        entry = _null_entry(r, claim)
        if entry is None:
            no_null.append((r, "no null available (its analysis has no null_baseline for "
                               f"{METRICS[claim.metric].null_key}: re-run the analysis; `paper_band` gives the "
                               "paper's band alone)"))
            continue
        x = _scalar(v)
        beyond.append((r, x > entry["hi"] if claim.null == "above" else x < entry["lo"]))
        nulls.append(entry)
    paper_band = f"{verdict} ({seeds})" if seeds else verdict
    m.left_out.extend(no_null)
    if not beyond:
        return Verdict(claim, UNTESTABLE, ours, why=_reasons(no_null), paper_band=paper_band)
    mean = seed_interval([float(e["mean"]) for e in nulls if isinstance(e.get("mean"), (int, float))])
    null_text = (f"null mean {_fmt(mean.mean)}, 95 % band [{_fmt(min(e['lo'] for e in nulls))}, "
                 f"{_fmt(max(e['hi'] for e in nulls))}]" + (f" over {len(nulls)} runs" if len(nulls) > 1 else ""))
    shuffled = [e for e in (_null_entry(r, claim, "shuffled") for r, _ in m.values) if e is not None]
    if shuffled:  # same increments in random order: persistence vs magnitude
        mean_sh = seed_interval([float(e["mean"]) for e in shuffled if isinstance(e.get("mean"), (int, float))])
        null_text += (f"; shuffled increments: mean {_fmt(mean_sh.mean)}, band [{_fmt(min(e['lo'] for e in shuffled))}, "
                      f"{_fmt(max(e['hi'] for e in shuffled))}]")
    verdict, seeds = seed_verdict(_by_group(beyond))
    return Verdict(claim, verdict, ours, seeds=seeds, paper_band=paper_band, null=null_text)


# ----------------------------------------------------------------------------- comparisons
def _compare(claim: Claim, m: Measured, other: Measured, ctx: ClaimContext) -> Verdict:
    chk = claim.check
    above = chk.kind == "above"
    keys = _protocol(chk.other.same, chk.may_differ)
    ours = _values_text(m.values) + " vs " + _values_text(other.values)
    if claim.aggregate in ("mean", "min", "max"):
        mine = _aggregate([_scalar(v) for _, v in m.values], claim.aggregate)
        refs = [_scalar(v) for o, v in other.values if any(_matches(r, o, keys, ctx) for r, _ in m.values)]
        if not refs:
            return Verdict(claim, UNTESTABLE, ours, why=f"no control run with the same {', '.join(keys)}")
        ref = _aggregate(refs, claim.aggregate)
        bound = chk.factor * ref + (chk.margin if above else -chk.margin)
        holds = mine > bound if above else mine < bound
        return Verdict(claim, HOLDS if holds else FAILS, ours, seeds=f"{claim.aggregate} over runs",
                       effect=f"{_fmt(mine)} vs {_fmt(ref)}")
    outcomes, diffs, unmatched = [], [], []
    for r, v in m.values:
        matched = [(o, w) for o, w in other.values if _matches(r, o, keys, ctx)]
        paired = [(o, w) for o, w in matched if o.cfg("seed") == r.cfg("seed")]
        refs = [_scalar(w) for _, w in (paired or matched)]  # the same seed's control when there is one
        if not refs:
            unmatched.append((r, f"no control run with the same {', '.join(keys)}"))
            continue
        x = _scalar(v)
        ref = max(refs) if above else min(refs)  # the most demanding matched control
        bound = chk.factor * ref + (chk.margin if above else -chk.margin)
        outcomes.append((r, x > bound if above else x < bound))
        diffs.append(x - chk.factor * ref)
    m.left_out.extend(unmatched)
    if not outcomes:
        return Verdict(claim, UNTESTABLE, ours, why=_reasons(unmatched))
    if claim.aggregate == "any":
        k = sum(o for _, o in outcomes)
        verdict, seeds = (HOLDS if k else FAILS), f"any: {k} of {len(outcomes)} runs"
    else:
        verdict, seeds = seed_verdict(_by_group(outcomes))
    ci = seed_interval(diffs)
    scale = f"{_fmt(chk.factor)} × " if chk.factor != 1 else ""
    effect = f"ours − {scale}control: {ci.text(_fmt)}"
    return Verdict(claim, verdict, ours, seeds=seeds, effect=effect)


# ----------------------------------------------------------------------------- orderings
def _seed_trend(levels: list[float], values: list[float], claim: Claim) -> tuple[bool, float, str]:
    """(holds, signed effect, reason) of one seed's values at increasing key values."""
    chk = claim.check
    sign = 1.0 if chk.kind == "increases_with" else -1.0
    effect = sign * (values[-1] - values[0])
    need = chk.min_effect * abs(values[0]) if chk.min_effect_rel else chk.min_effect
    if not effect > need:
        flat = abs(effect) <= 1e-9 * max(1.0, abs(values[0]))
        word = "flat" if flat else "reversed" if effect < 0 else f"too small (minimum {_fmt(need)})"
        return False, effect, f"{word}: change {_fmt(sign * effect)} from {chk.key} {levels[0]:g} to {levels[-1]:g}"
    for (ka, a), (kb, b) in zip(zip(levels, values), zip(levels[1:], values[1:])):
        if sign * (b - a) < -chk.tolerance:
            return False, effect, f"reversed by {_fmt(abs(b - a))} between {chk.key} {ka:g} and {kb:g} (tolerance {chk.tolerance:g})"
    return True, effect, ""


def _order(claim: Claim, m: Measured, ctx: ClaimContext) -> Verdict:
    """An ordering along `key`, seeds paired across the key's values; separately in each group of
    runs sharing the `within` selectors and the protocol (a group with too few values is skipped)."""
    chk = claim.check
    within = _protocol(chk.within, chk.may_differ)
    shown_within = [k for k in within if k not in PROTOCOL_KEYS]
    groups: dict[tuple, list[tuple[Run, float]]] = {}
    for r, v in m.values:
        groups.setdefault(tuple(str(selector_value(r, k, ctx)) for k in within), []).append((r, _scalar(v)))
    shown, skipped, effects_text = [], [], []
    outcomes: dict[str, list[bool]] = {}
    for gi, (where, members) in enumerate(groups.items()):
        name = ", ".join(f"{k}={w}" for k, w in zip(within, where) if k in shown_within)
        if len(groups) > 1 and (not name or sum(1 for w in groups if all(
                a == b for a, b, k in zip(w, where, within) if k in shown_within)) > 1):
            name = (name + ", " if name else "") + f"protocol #{gi + 1}"
        tag = f"[{name}] " if name and len(groups) > 1 else ""
        by_key: dict[float, dict] = {}
        for r, v in members:
            by_key.setdefault(selector_value(r, chk.key, ctx), {}).setdefault(r.cfg("seed"), []).append(v)
        levels = sorted(by_key)
        means = [sum(x for vs in by_key[k].values() for x in vs) / sum(len(vs) for vs in by_key[k].values()) for k in levels]
        shown.append(tag + " → ".join(f"{chk.key} {k:g}: {_fmt(v)}" for k, v in zip(levels, means)))
        if len(levels) < claim.min_runs:
            skipped.append(f"{tag.strip('[] ') + ': ' if tag else ''}needs {claim.min_runs} distinct {chk.key} "
                           f"values, have {len(levels)}")
            continue
        seeds = [s for s in by_key[levels[0]] if all(s in by_key[k] for k in levels)]
        series = {s: [sum(by_key[k][s]) / len(by_key[k][s]) for k in levels] for s in seeds}
        note = ""
        partial = sorted({str(s) for k in levels for s in by_key[k]} - {str(s) for s in seeds})
        if partial and seeds:
            skipped.append(f"{tag}seed {', '.join(partial)} not at every {chk.key} value: left out of the pairing")
        if not series:  # no seed at every key value: the group means, unpaired
            series = {"group means": means}
            note = " (unpaired: no seed at every value)"
        label = tag.strip("[] ") or "all"
        oks, effects, reasons = [], [], []
        for s, vals in series.items():
            ok, eff, why = _seed_trend(levels, vals, claim)
            oks.append(ok)
            effects.append(eff)
            if why:
                reasons.append(f"seed {s}: {why}" if s != "group means" else why)
        outcomes[label] = oks
        ci = seed_interval(effects)
        dz = effect_size(effects)
        effects_text.append(f"{tag}{'+' if ci.mean >= 0 else ''}{ci.text(_fmt)} in the claimed direction"
                            + (f", d_z {_fmt(dz)}" if math.isfinite(dz) or math.isinf(dz) else "") + note)
        if reasons:
            skipped.append(f"{tag}" + "; ".join(reasons))
    ours = "; ".join(shown)
    if not outcomes:
        return Verdict(claim, UNTESTABLE, ours, "; ".join(skipped))
    verdict, seeds_text = seed_verdict(outcomes)
    if len(outcomes) == 1 and len(groups) > 1:  # name the tested group when others were skipped
        seeds_text = f"[{next(iter(outcomes))}] {seeds_text}"
    why = "; ".join(x if ("seed " in x or "reversed" in x or "flat" in x or "too small" in x) else f"skipped {x}"
                    for x in skipped)
    return Verdict(claim, verdict, ours, why, seeds=seeds_text, effect="; ".join(effects_text))


# ----------------------------------------------------------------------------- the check
def _execution_note(values: list[tuple[Run, float | list[float]]]) -> str:
    by_group: dict[str, list[Run]] = {}
    for r, _ in values:
        by_group.setdefault(seed_group_key(r), []).append(r)
    notes = []
    for members in by_group.values():
        diff = execution_differences(members)
        if diff:
            notes.append(f"execution differs within {_group_label(members[0])}: {diff}")
    return "; ".join(notes)


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
    values = list(m.values)
    if claim.check.kind == "band":
        v = _band(claim, m)
        notes = [m]
    elif claim.check.kind in ("above", "below"):
        keys = _protocol(claim.check.other.same, claim.check.may_differ)
        other = _measure(claim.check.other, claim, _sharing(runs, m, keys, ctx), ctx, exclude={id(r) for r, _ in m.values})
        if not other.values:
            return Verdict(claim, UNTESTABLE, why=_missing(claim.check.other, other, "runs to compare with missing"),
                           used=[_label(r) for r, _ in m.values])
        v = _compare(claim, m, other, ctx)
        notes = [m, other]
        values += other.values
    else:
        v = _order(claim, m, ctx)
        notes = [m]
    left = {id(r) for mm in notes for r, _ in mm.left_out}
    v.used = [_label(r) for mm in notes for r, _ in mm.values if id(r) not in left]
    note = _left_out_note(*notes)
    v.why = "; ".join(x for x in (v.why if v.why not in note else "", note, _execution_note(values)) if x)
    return v


def check_claims(runs: list[Run], claims: list[Claim]) -> list[Verdict]:
    """Verdicts of every claim, in the claims' order (one context: source runs load once)."""
    ctx = ClaimContext(runs)
    return [check_claim(c, runs, ctx) for c in claims]


def verdict_counts(verdicts: list[Verdict]) -> dict[str, int]:
    out = {v: 0 for v in VERDICTS}
    for v in verdicts:
        out[v.verdict] += 1
    return out
