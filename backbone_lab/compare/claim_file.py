"""The claim file format: claims as data (``claims.yaml``; users add their own files).

    format: backbone_lab.claims        # required, version 1
    version: 1
    claims:
      - id: sgd_family_less_rich       # unique name
        section: "§5.1"                # where the paper says it
        statement: "SGD-family trajectories are more one-dimensional than AdamW's"
        metric: pc1_rownorm_pct        # a name of claim_metrics.METRICS
        runs: {optimizer: [SGD, SGD+momentum, SGDW-Nesterov]}   # selectors (claim_selection)
        requires: [finished]           # per run; a run that fails one is left out, with the reason
        requires_some: [probe_learned] # at least one selected run must meet these, else not testable
        unless_flags: [few_rolling_windows]   # analysis flags that make a run's number meaningless
        expect:                        # exactly one check:
          above: {runs: {optimizer: AdamW}, requires: [], same: [model.name, train.max_steps]}
                                       # ... than every run of this selection that shares the `same`
                                       # selector values with a selected run (a matched control)
          margin: 0                    # above: value > other + margin; below: value < other - margin
          factor: 1                    # above: value >= factor x other; below: value <= factor x other
        # other checks:  {at_least: 60, at_most: 80}          (a band; either end may be left out)
        #                {increases_with: beta2, min_effect: 1.0, tolerance: 0.5, within: [train.max_steps]}
        #                                      (or decreases_with; any selector; `within`: the ordering is
        #                                       checked separately in each group of runs sharing those values;
        #                                       per seed, the change from the lowest to the highest key value
        #                                       must reach min_effect (a number, or "5%" of the lowest's value)
        #                                       and no adjacent step may reverse by more than tolerance)
        # comparisons and orderings hold the protocol fixed (schedule, lambda_schedule, anchor, analysis);
        # `may_differ: [lambda_schedule]` in expect lets a control differ in one of them
        # beyond_null: above           # band checks, optional: the value must also lie above (below) the
                                       # analysis' null band (random walk with the same increments); the
                                       # expect band is then reported as the secondary `paper_band`
        aggregate: each                # each (default) | any | mean | min | max over the selected runs
        min_runs: 1                    # runs needed to test it (order checks: distinct values, default 2)
        paper: "100 % vs 61.5 % (Table 4)"    # the paper's numbers, shown beside ours

Loading validates every claim (unknown keys, metrics, selectors, requirements, checks) and fails
with one line naming the file and the claim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FORMAT = "backbone_lab.claims"
VERSION = 1
PAPER_CLAIMS_FILE = Path(__file__).with_name("claims.yaml")

CLAIM_KEYS = {"id", "section", "statement", "metric", "runs", "requires", "requires_some", "unless_flags", "expect",
              "aggregate", "min_runs", "paper", "beyond_null"}
EXPECT_KEYS = {"at_least", "at_most", "above", "below", "margin", "factor", "increases_with", "decreases_with", "tolerance",
               "within", "min_effect", "may_differ"}
NULL_SIDES = ("above", "below")
AGGREGATES = ("each", "any", "mean", "min", "max")


class ClaimFileError(ValueError):
    """A claim file that does not follow the format (the message names the file and the claim)."""


@dataclass(frozen=True)
class Selection:
    """Runs picked by selector values, each of which must meet `requires` to count."""

    runs: dict[str, Any]
    requires: tuple[str, ...] = ()
    same: tuple[str, ...] = ()  # comparisons: only runs sharing these selector values with a compared run


@dataclass(frozen=True)
class Check:
    """One expectation: a band, a comparison with another selection, or an ordering."""

    kind: str  # band | above | below | increases_with | decreases_with
    at_least: float | None = None
    at_most: float | None = None
    other: Selection | None = None
    margin: float = 0.0
    factor: float = 1.0
    key: str | None = None
    tolerance: float = 0.0
    within: tuple[str, ...] = ()  # orderings: checked separately within runs sharing these selector values
    min_effect: float = 0.0       # orderings: smallest per-seed change from the lowest to the highest key value
    min_effect_rel: bool = False  # min_effect is a fraction of |value at the lowest key value|
    may_differ: tuple[str, ...] = ()  # protocol selectors the compared / ordered runs may differ in

    def describe(self, unit: str = "") -> str:
        u = f" {unit}" if unit and unit not in ("×",) else unit
        if self.kind == "band":
            if self.at_least is not None and self.at_most is not None:
                return f"in [{self.at_least:g}, {self.at_most:g}]{u}"
            return f"≥ {self.at_least:g}{u}" if self.at_least is not None else f"≤ {self.at_most:g}{u}"
        if self.kind in ("above", "below"):
            rel = ("≥" if self.factor != 1 else ">") if self.kind == "above" else ("≤" if self.factor != 1 else "<")
            scale = f"{self.factor:g} × " if self.factor != 1 else ""
            pad = f" {'+' if self.kind == 'above' else '−'} {self.margin:g}" if self.margin else ""
            same = f" (same {', '.join(self.other.same)})" if self.other.same else ""
            return f"{rel} {scale}runs with {selection_text(self.other.runs)}{pad}{same}"
        word = "increases" if self.kind == "increases_with" else "decreases"
        effect = (f"{100 * self.min_effect:g} % of the lowest's value" if self.min_effect_rel
                  else f"{self.min_effect:g} percentage points" if unit == "%" else f"{self.min_effect:g}{u}")
        tol = f", tolerance {self.tolerance:g} per step" if self.tolerance else ""
        within = f", within runs of the same {', '.join(self.within)}" if self.within else ""
        return f"{word} with {self.key} by > {effect} per seed{tol}{within}"


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    metric: str
    check: Check
    section: str = ""
    selection: Selection = field(default_factory=lambda: Selection({}))
    requires_some: tuple[str, ...] = ()
    unless_flags: tuple[str, ...] = ()
    aggregate: str = "each"
    min_runs: int = 1
    paper: str = ""
    source: str = ""
    null: str = ""  # "above" | "below": the value must also lie beyond the analysis' null band


def _value_text(v: Any) -> str:
    if isinstance(v, dict):
        return " ".join(s for s in (f"≥{v['min']:g}" if v.get("min") is not None else "",
                                    f"≤{v['max']:g}" if v.get("max") is not None else "") if s)
    if isinstance(v, list):
        return "|".join(_value_text(x) for x in v)
    if isinstance(v, bool):
        return str(v).lower()
    return f"{v:g}" if isinstance(v, float) else str(v)


def selection_text(runs: dict[str, Any]) -> str:
    return ", ".join(f"{k}{'' if isinstance(v, dict) else '='}{_value_text(v)}" for k, v in runs.items()) or "all runs"


def _fail(src: str, cid: str, msg: str):
    raise ClaimFileError(f"{src}: claim {cid!r}: {msg}")


def _names(value: Any, src: str, cid: str, what: str, known: set[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list):
        _fail(src, cid, f"{what} must be a list")
    unknown = [v for v in value if v not in known]
    if unknown:
        _fail(src, cid, f"unknown {what} {unknown}; known: {sorted(known)}")
    return tuple(value)


def _selection(node: Any, src: str, cid: str, what: str) -> Selection:
    from backbone_lab.compare.claim_selection import is_known_selector

    if node is None:
        node = {}
    if not isinstance(node, dict):
        _fail(src, cid, f"{what} must be a mapping of selector: value")
    bad = [k for k in node if not is_known_selector(str(k))]
    if bad:
        _fail(src, cid, f"{what}: unknown selector {bad} (optimizer, beta2, lambda_switch, reheating, source.<...>, "
                        "or a dotted config key such as data.p_probe)")
    return Selection(dict(node))


def _check(node: Any, src: str, cid: str) -> Check:
    from backbone_lab.compare.claim_selection import REQUIREMENTS, is_known_selector

    if not isinstance(node, dict):
        _fail(src, cid, "expect must be a mapping")
    unknown = set(node) - EXPECT_KEYS
    if unknown:
        _fail(src, cid, f"expect: unknown keys {sorted(unknown)}; allowed {sorted(EXPECT_KEYS)}")
    kinds = [k for k in ("above", "below", "increases_with", "decreases_with") if k in node]
    band = "at_least" in node or "at_most" in node
    if len(kinds) + band != 1:
        _fail(src, cid, "expect needs exactly one check: at_least/at_most, above, below, increases_with or decreases_with")
    num = {k: float(node[k]) for k in ("margin", "factor", "tolerance") if k in node}
    from backbone_lab.compare.claim_selection import PROTOCOL_KEYS

    may_differ = _names(node.get("may_differ"), src, cid, "expect.may_differ", set(PROTOCOL_KEYS))
    if band and may_differ:
        _fail(src, cid, "expect.may_differ applies to comparisons and orderings only")
    if band:
        return Check("band", at_least=node.get("at_least"), at_most=node.get("at_most"))
    kind = kinds[0]
    if kind in ("above", "below"):
        other = node[kind]
        if not isinstance(other, dict) or "runs" not in other or set(other) - {"runs", "requires", "same"}:
            _fail(src, cid, f"expect.{kind} must be {{runs: {{...}}, requires: [...], same: [...]}}")
        sel = _selection(other["runs"], src, cid, f"expect.{kind}.runs")
        req = _names(other.get("requires"), src, cid, f"expect.{kind}.requires", set(REQUIREMENTS))
        same = tuple(other.get("same") or ())
        bad = [k for k in same if not is_known_selector(str(k))]
        if bad:
            _fail(src, cid, f"expect.{kind}.same: unknown selector {bad}")
        return Check(kind, other=Selection(sel.runs, req, same), may_differ=may_differ,
                     **{k: v for k, v in num.items() if k != "tolerance"})
    key = str(node[kind])
    within = tuple(node.get("within") or ())
    bad = [k for k in (key, *within) if not is_known_selector(str(k))]
    if bad:
        _fail(src, cid, f"expect.{kind}: unknown selector {bad}")
    min_effect, rel = node.get("min_effect", 0.0), False
    if isinstance(min_effect, str) and min_effect.strip().endswith("%"):
        min_effect, rel = min_effect.strip()[:-1], True
    try:
        min_effect = float(min_effect) / (100 if rel else 1)
    except (TypeError, ValueError):
        _fail(src, cid, f"expect.min_effect must be a number or a percentage such as '5%', got {node.get('min_effect')!r}")
    if min_effect < 0:
        _fail(src, cid, "expect.min_effect must be ≥ 0 (the direction is the check's own)")
    return Check(kind, key=key, tolerance=num.get("tolerance", 0.0), within=within, min_effect=min_effect,
                 min_effect_rel=rel, may_differ=may_differ)


def parse_claims(doc: Any, src: str = "<claims>") -> list[Claim]:
    """Validate a parsed claim document and return its claims."""
    from backbone_lab.compare.claim_metrics import METRICS
    from backbone_lab.compare.claim_selection import REQUIREMENTS

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ClaimFileError(f"{src}: not a claim file (needs `format: {FORMAT}` and `version: {VERSION}`)")
    if doc.get("version") != VERSION:
        raise ClaimFileError(f"{src}: version {doc.get('version')!r} is not supported (expected {VERSION})")
    items = doc.get("claims")
    if not isinstance(items, list) or not items:
        raise ClaimFileError(f"{src}: `claims` must be a non-empty list")
    out: list[Claim] = []
    seen: set[str] = set()
    for i, node in enumerate(items):
        cid = str(node.get("id", f"#{i}")) if isinstance(node, dict) else f"#{i}"
        if not isinstance(node, dict):
            _fail(src, cid, "each claim must be a mapping")
        unknown = set(node) - CLAIM_KEYS
        if unknown:
            _fail(src, cid, f"unknown keys {sorted(unknown)}; allowed {sorted(CLAIM_KEYS)}")
        for k in ("id", "statement", "metric", "expect"):
            if k not in node:
                _fail(src, cid, f"missing `{k}`")
        if cid in seen:
            _fail(src, cid, "duplicate id")
        seen.add(cid)
        if node["metric"] not in METRICS:
            _fail(src, cid, f"unknown metric {node['metric']!r}; known: {sorted(METRICS)}")
        aggregate = node.get("aggregate", "each")
        if aggregate not in AGGREGATES:
            _fail(src, cid, f"aggregate must be one of {AGGREGATES}")
        sel = _selection(node.get("runs"), src, cid, "runs")
        check = _check(node["expect"], src, cid)
        null = node.get("beyond_null") or ""
        if null and (null not in NULL_SIDES or check.kind != "band"):
            _fail(src, cid, f"beyond_null must be one of {NULL_SIDES} and goes with a band check (at_least / at_most)")
        out.append(Claim(
            id=cid, statement=str(node["statement"]).strip(), metric=node["metric"], check=check,
            section=str(node.get("section", "")),
            selection=Selection(sel.runs, _names(node.get("requires"), src, cid, "requires", set(REQUIREMENTS))),
            requires_some=_names(node.get("requires_some"), src, cid, "requires_some", set(REQUIREMENTS)),
            unless_flags=tuple(node.get("unless_flags") or ()), aggregate=aggregate,
            min_runs=int(node.get("min_runs", 2 if check.kind.endswith("_with") else 1)),
            paper=str(node.get("paper", "")).strip(), source=src, null=null))
    return out


def load_claims(path: str | Path) -> list[Claim]:
    """Read and validate a claim file."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ClaimFileError(f"{path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ClaimFileError(f"{path}: not valid YAML ({err})") from None
    return parse_claims(doc, path.name if path == PAPER_CLAIMS_FILE else str(path))


def paper_claims() -> list[Claim]:
    """The paper's claims shipped with backbone_lab (`claims.yaml` next to this module)."""
    return load_claims(PAPER_CLAIMS_FILE)
