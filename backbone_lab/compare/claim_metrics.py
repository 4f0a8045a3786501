"""The quantities a claim can be about: one named metric per number a run can give.

A claim file (``claims.yaml``) names its metric (``metric: pc1_rownorm_pct``); this module says
what each name measures, in which unit, and where it comes from — the run's typed analysis
`Summary`, its ``eval_metrics.csv``, its reheating source run, or the matched-loss windows of the
whole comparison. A metric that a run cannot give raises `NotMeasured` with the reason and how
to get it (e.g. "no gradient alignment recorded: train with callbacks=alignment"), which the
claims check turns into a *not testable here* verdict.

Values are floats; ``per_block_pc1_raw_pct`` is a list (one value per block: a band then holds
for every block). Every number an analysis stage declares (`analysis.stage.Number`) is a metric
under its own name, unit and description without a line here — the built-in stages' at import,
a user stage's once `declare_numbers` has read a run's summary.json (`compare` does, before the
claim files are checked). Only a metric that computes something (a ratio, a difference, a
lookup across runs) is written here, with `@metric(name, unit, about)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backbone_lab.analysis.stages.training_diagnostics import NO_DIAGNOSTICS
from backbone_lab.compare.runs import Run, eval_best, eval_last, load_run
from backbone_lab.compare.tables import early_correlation, matched_pairs, matched_windows_table
from backbone_lab.run_dir import RunDir


class NotMeasured(Exception):
    """The run does not give this metric; the message says why and how to get it."""


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    about: str
    fn: Callable[[Run, ClaimContext], Any]
    null_key: str = ""  # its name in summary.json `null_baseline.metrics` (default: the metric's own name)

    def value(self, run: Run, ctx: ClaimContext) -> float | list[float]:
        v = self.fn(run, ctx)
        if v is None:
            raise NotMeasured(f"{self.name} absent in the analysis of {run.label or run.name}")
        if isinstance(v, (list, tuple)):
            vals = [float(x) for x in v if x is not None and math.isfinite(float(x))]
            if not vals:
                raise NotMeasured(f"{self.name}: no finite value in {run.label or run.name}")
            return vals
        v = float(v)
        if not math.isfinite(v):
            raise NotMeasured(f"{self.name} is not finite in {run.label or run.name}")
        return v


METRICS: dict[str, Metric] = {}


def metric(name: str, unit: str, about: str, null_key: str = ""):
    """Register `fn(run, ctx) -> value | None` as a claim metric (`null_key`: its name in the
    analysis' null baseline when that differs from `name`)."""

    def deco(fn):
        if name in METRICS:
            raise ValueError(f"claim metric {name!r} is defined twice")
        METRICS[name] = Metric(name, unit, about, fn, null_key or name)
        return fn

    return deco


def _declared_lookup(name: str, absent: str) -> Callable:
    def lookup(run: Run, ctx: ClaimContext):
        try:
            v = run.summary.value(name)
        except KeyError:  # the run's analysis has no stage declaring it
            v = None
        if v is None and absent:
            raise NotMeasured(absent)
        return v

    return lookup


def declare_numbers(table: dict[str, dict]) -> None:
    """Make every number of a ``numbers`` table (summary.json's, or the built-in stages') a claim
    metric: a plain lookup by its one name. A name already defined stays as it is."""
    for name, row in (table or {}).items():
        if name not in METRICS:
            METRICS[name] = Metric(name, str(row.get("unit", "")), str(row.get("about", "")),
                                   _declared_lookup(name, str(row.get("absent", ""))), name)


def null_entry(run: Run, name: str, block_name: str = "metrics") -> dict | None:
    """Claim metric `name`'s entry {observed, mean, lo, hi, ...} in the run's null baseline
    (`metrics`: the random walk; `shuffled`: the run's increments in random order); None when the
    analysis has none. Null baselines written before the numbers were declared use older names
    (e.g. update_mean_abs_cos for update_abs_cos): a declared number's aliases are tried too."""
    from backbone_lab.analysis.registry import builtin_numbers

    metric = METRICS[name]
    block = run.get(f"null_baseline.{block_name}") or {}
    if not isinstance(block, dict):
        return None
    older = tuple((builtin_numbers().get(name) or {}).get("aliases") or ())
    for key in (metric.null_key, metric.name, *older):
        entry = block.get(key)
        if isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in ("lo", "hi")):
            return entry
    return None


class ClaimContext:
    """What metrics may look at beyond one run: all compared runs, source runs, cross-run tables."""

    def __init__(self, runs: list[Run]):
        self.runs = runs
        self._sources: dict[str, Run | None] = {}
        self._matched: list[dict] | None = None
        self._matched_dropped: dict[int, str] | None = None

    def source_of(self, run: Run) -> Run | None:
        """The `init_from` run of a reheating run, loaded once (None when absent or unreadable)."""
        src = run.cfg("init_from")
        if not src:
            return None
        key = str(src)
        if key not in self._sources:
            path = Path(key)
            if not path.is_absolute() and not RunDir(path).config.exists():
                # a relative init_from is relative to where training started: try the run's own tree
                for parent in run.run_dir.resolve().parents:
                    if RunDir(parent / path).config.exists():
                        path = parent / path
                        break
            self._sources[key] = load_run(path) if RunDir(path).config.exists() else None
        return self._sources[key]

    def matched_windows(self) -> list[dict]:
        """Rows of the Table 5 recomputation (AdamW vs SGD+momentum at matched val loss), once."""
        if self._matched is None:
            try:
                self._matched = matched_windows_table(self.runs)
            except Exception:  # noqa: BLE001 - no trajectory / grams: no matched windows
                self._matched = []
        return self._matched

    def matched_dropped(self, run: Run) -> str | None:
        """Why `run` has no matched-loss window (None when it has a partner)."""
        if self._matched_dropped is None:
            self._matched_dropped = {id(r): why for r, why in matched_pairs(self.runs)[1]}
        return self._matched_dropped.get(id(run))


def _needs(block_value: Any, why: str) -> Any:
    if block_value is None:
        raise NotMeasured(why)
    return block_value


# ----------------------------------------------------------------------------- trajectory PCA
@metric("backbone_frac_mean_pct", "%", "mean over snapshots of f_b = a(t)² / ‖Δθ(t)‖² (paper §3.3's 68–72 %)")
def _fb_mean(run, ctx):
    v = run.summary.backbone_frac_mean
    return None if v is None else 100 * v


@metric("per_block_pc1_raw_pct", "%", "raw PC1 per block (paper Table 2; block{i}_ln when the store holds LayerNorms)")
def _per_block(run, ctx):
    blocks = run.get("per_block.blocks") or {}
    if not blocks:
        raise NotMeasured("no per-block PCA in the analysis (per_block stage off or a single block)")
    return [b.get("pc1_pct") for b in blocks.values()]


# ----------------------------------------------------------------------------- rolling / phases
@metric("phase_pc1_gain", "percentage points", "PC1 % of the late phase minus PC1 % of the early phase (paper §4.3: 81 − 60)")
def _phase_gain(run, ctx):
    early, late = run.get("phases.pc1_early_pct"), run.get("phases.pc1_late_pct")
    if early is None or late is None:
        raise NotMeasured("no phase backbones (phases stage skipped: too few rows per phase)")
    return late - early


# ----------------------------------------------------------------------------- alignment
_NO_DIAGNOSTICS = NO_DIAGNOSTICS


@metric("grad_over_noise_floor", "×", "per-batch gradient |cos| / the random-direction floor √(2/(πD))")
def _grad_floor(run, ctx):
    g = _needs(run.summary.grad_abs_cos, _NO_DIAGNOSTICS)
    floor = run.get("training_diagnostics.noise_floor")
    return None if not floor else g / floor


# ----------------------------------------------------------------------------- fits, correlations, switching
@metric("gamma_a_first", "exponent", "power-law exponent of |a(t)| in the first fit window (paper §4.5: 2.07 on 0–2k)",
        null_key="gamma_a")
def _gamma(run, ctx):
    windows = run.get("fits.windows") or []
    if not windows:
        raise NotMeasured("no power-law fits in the analysis")
    lo, hi = windows[0]
    return run.get(f"fits.by_window.{lo}-{hi}.gamma_a")


@metric("corr_early", "Pearson r", "corr(p_ood, ‖r(t)‖) on the first window from step 0 (paper §4.6: +0.85 on 0–4k)")
def _corr(run, ctx):
    v = early_correlation(run)
    return None if math.isnan(v) else v


@metric("switch_backbone_share", "fraction", "mean ⟨v_sw, v_b⟩² of the p_ood peak→trough switching directions (paper §8: 0.04–0.10)")
def _share(run, ctx):
    pairs = run.get("switching.geometry.pairs") or []
    shares = [p.get("backbone_share") for p in pairs if p.get("backbone_share") is not None]
    if not shares:
        raise NotMeasured("no p_ood switching pairs (no peak/trough of prominence ≥ 0.03)")
    return sum(shares) / len(shares)


# ----------------------------------------------------------------------------- eval metrics
@metric("best_p_ood", "accuracy", "best OOD probe accuracy over the run's evaluations")
def _best(run, ctx):
    return eval_best(run, "p_ood")[0]


@metric("final_val_loss", "nats/token", "validation L_LM at the last evaluation")
def _val(run, ctx):
    return eval_last(run, "val_loss")


# ----------------------------------------------------------------------------- matched windows (Table 5)
@metric("matched_window_pc1_pct", "%", "row-normalised PC1 on the ±2-evaluation window around the matched-val-loss step (paper Table 5)")
def _matched(run, ctx):
    rows = [r for r in ctx.matched_windows() if r.get("run") == (run.label or run.name) and r.get("window") == "matched ±2 evals"]
    if not rows:
        raise NotMeasured(ctx.matched_dropped(run) or "no matched-loss window (needs an AdamW and an SGD+momentum run "
                                                      "with snapshots around the matched step)")
    return rows[0]["pc1_pct"]


# ----------------------------------------------------------------------------- reheating
def _reheat_p(run) -> tuple[float, float, float]:
    p = [v for v in run.eval.get("p_ood", []) if math.isfinite(v)]
    if not p:
        raise NotMeasured("no p_ood evaluations in the reheating run")
    return p[0], max(p), p[-1]


@metric("reheat_gain", "accuracy", "peak p_ood during reheating minus p_ood at its start")
def _gain(run, ctx):
    start, peak, _ = _reheat_p(run)
    return peak - start


@metric("reheat_peak_over_source_best", "accuracy", "peak reheating p_ood minus the source run's best training p_ood (paper §7.2: 0.782 vs 0.777)")
def _reentry(run, ctx):
    src = ctx.source_of(run)
    if src is None:
        raise NotMeasured(f"reheating source {run.cfg('init_from')!r} not found")
    return _reheat_p(run)[1] - eval_best(src, "p_ood")[0]


@metric("reheat_decay", "accuracy", "peak p_ood during reheating minus its final p_ood (paper Table 6: 0.48 / 0.50 / 0.16)")
def _decay(run, ctx):
    _, peak, final = _reheat_p(run)
    return peak - final


@metric("reheat_a_change_pct", "%", "max |a(t) − a_src(final)| / a_src(final) during reheating, in the source backbone frame")
def _a_change(run, ctx):
    v = run.summary.reheat_max_abs_a_rel_change
    if v is None:
        raise NotMeasured("no projection on the source backbone (analysis.source_run unset)")
    return 100 * v


@metric("reheat_transverse_share", "fraction", "1 − max_t cos²(θ(t) − θ(start), source v_b) over the reheating: the smallest share of the reheating move that is off the backbone")
def _transverse(run, ctx):
    cos = [c for c in (run.get("reheating.cos_displacement_vb") or []) if c is not None and math.isfinite(c)]
    if not cos:
        raise NotMeasured("no projection on the source backbone (analysis.source_run unset)")
    return 1 - max(c * c for c in cos)


def _declare_builtin_numbers() -> None:
    from backbone_lab.analysis.registry import builtin_numbers

    clash = sorted(set(builtin_numbers()) & set(METRICS))
    if clash:  # one declaration per number: a stage's number is not written again here
        raise ValueError(f"claim metrics {clash} are declared by an analysis stage already")
    declare_numbers(builtin_numbers())


_declare_builtin_numbers()
