"""The analysis pipeline on planted trajectories: the legacy denominator fix, irregular step
selection, degenerate-case flags, user stages from outside the package, the typed Summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.registry import check_stage_names
from backbone_lab.analysis.run_analysis import run_analysis
from backbone_lab.analysis.selection import select_steps
from backbone_lab.analysis.summary import Summary
from backbone_lab.run_dir import RunDir
from backbone_lab.trajectory.store import TrajectoryError, TrajectoryWriter

FAST = dict(corr_bootstrap=0, figures=False, report=False, progress=False)


def write_matrix(run: Path, steps, theta: np.ndarray) -> Path:
    """A run folder whose trajectory stores the rows of `theta` (T, D) as two 'block' tensors."""
    D = theta.shape[1]
    h = D // 2
    w = TrajectoryWriter(RunDir(run).trajectory)
    for s, row in zip(steps, theta.astype(np.float32)):
        w.append(int(s), {"blocks.0.attn.qkv.weight": row[:h].reshape(-1, 4), "blocks.1.attn.qkv.weight": row[h:].reshape(-1, 4)})
    return run


def write_metrics(run: Path, steps, p_ood) -> None:
    with open(RunDir(run).eval_metrics, "w") as f:
        f.write("step,val_loss,p_ood\n")
        for s, p in zip(steps, p_ood):
            f.write(f"{s},2.0,{p}\n")


def planted(T: int, D: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(D)
    X = np.outer(np.linspace(0, 3, T) ** 1.5, v) + 0.3 * np.cumsum(rng.standard_normal((T, D)), axis=0)
    return X.astype(np.float32).astype(np.float64)


# ----------------------------------------------------------------------------- PAPER_MAP §5.1 / W2
def test_legacy_top10_changes_only_the_rownorm_fractions(tmp_path):
    """The reference normalises its truncated row-norm SVD by the top 10 σ² but uses the full SVD
    for raw fractions: top10_denominator=true must leave raw untouched (independent numpy SVD)."""
    steps = list(range(0, 2001, 100))  # anchor 0 + 20 drift rows > 10 components
    X = planted(len(steps))
    run = write_matrix(tmp_path / "run", steps, X)
    s = run_analysis(run, AnalysisConfig(top10_denominator=True, per_block=False, **FAST))
    D = X[1:] - X[0]
    sr = np.linalg.svd(D, compute_uv=False)
    Dn = D / np.linalg.norm(D, axis=1, keepdims=True)
    sn = np.linalg.svd(Dn, compute_uv=False)
    raw, rn = s["pca"]["raw"], s["pca"]["rownorm"]
    np.testing.assert_allclose(raw["explained"], (sr**2 / np.sum(sr**2))[:20], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rn["explained"], (sn**2 / np.sum(sn[:10] ** 2))[:20], rtol=1e-9, atol=1e-12)
    assert raw["top10_denominator"] is False and rn["top10_denominator"] is True
    assert rn["pc1_pct"] > 100 * sn[0] ** 2 / len(sn)  # inflated, as the reference's 71.43 %
    clean = run_analysis(run, AnalysisConfig(per_block=False, **FAST))
    assert clean["pca"]["raw"]["pc1_pct"] == raw["pc1_pct"]


# ----------------------------------------------------------------------------- snapshot selection
def irregular_steps() -> list[int]:
    """33 steps written at irregular intervals (another training loop's own schedule)."""
    gaps = np.random.default_rng(15).choice([20, 40, 60, 80, 100, 150], size=32)
    return [0] + [int(s) for s in np.cumsum(gaps)]


def test_irregular_trajectory_uses_every_snapshot(tmp_path):
    steps = irregular_steps()
    # the old auto cadence (multiples of the largest repeated spacing) kept only 7 of them
    assert 1 + sum(1 for s in steps[1:] if s % 150 == 0) == 7
    run = write_matrix(tmp_path / "run", steps, planted(len(steps)))
    s = Summary(run_analysis(run, AnalysisConfig(**FAST)))
    assert s.snapshots_used == 33 and s.snapshots_dropped == 0 and s.steps == steps and s.cadence == 0
    assert "every stored step" in s["selection"]["rule"] and "150" in s["selection"]["rule"]
    assert Summary.read(run).to_dict() == s.to_dict()  # what was returned is what was written


def test_paper_like_cadence_drops_the_dense_extras_and_says_so(tmp_path):
    base = list(range(200, 4001, 200))
    dense = list(range(600, 2001, 50))
    steps = sorted({0, 1, *base, *dense})
    run = write_matrix(tmp_path / "run", steps, planted(len(steps), seed=3))
    s = Summary(run_analysis(run, AnalysisConfig(anchor_step=1, **{**FAST, "report": True})))
    extras = [x for x in dense if x % 200]
    assert s.steps == [1] + base and s.cadence == 200
    assert s.snapshots_used == 21 and s.snapshots_dropped == 1 + len(extras)
    dropped = s.dropped_steps
    assert dropped["before the anchor step 1"] == [0]
    (reason,) = [r for r in dropped if r.startswith("off the base cadence 200")]
    assert dropped[reason] == extras and "uniform rows" in reason and "W10" not in reason
    report = (tmp_path / "run" / "analysis" / "report.md").read_text()
    assert f"{len(extras)} dropped (off the base cadence 200" in report and f"21 of {len(steps)} stored used" in report
    # every stored step on request: the dense rows come back
    assert Summary(run_analysis(run, AnalysisConfig(anchor_step=1, cadence=0, **FAST))).snapshots_used == len(steps) - 1


def test_selection_rules_and_hint():
    sel = select_steps([0, 1, 25, 50, 75, 100, 125], anchor_step=None, cadence=None)
    assert sel.steps == [0, 25, 50, 75, 100, 125] and sel.dropped == {"off the base cadence 25 (denser extra steps; "
                                                                     "uniform rows; cadence=0 keeps them)": [1]}
    holes = select_steps([0, 10, 20, 40, 50, 70, 80], cadence=None)  # spacing 20 twice; 60 missing
    assert holes.cadence == 0 and len(holes.steps) == 7 and "multiples of 20 between 20 and 80 are missing: [60]" in holes.rule
    sel = select_steps([0, 5, 10, 15, 20, 23], exclude_steps=[10], max_step=20, cadence=5)
    assert sel.steps == [0, 5, 15, 20] and set(sel.dropped) == {"listed in exclude_steps", "after max_step=20"}
    with pytest.raises(TrajectoryError) as e:
        select_steps([0, 7], cadence=0)
    assert "cadence 0" in str(e.value) and "set cadence=0" not in str(e.value)
    with pytest.raises(TrajectoryError, match=r"set cadence=0\?"):
        select_steps([0, 7, 9, 10], cadence=10)


# ----------------------------------------------------------------------------- degenerate cases
def test_degenerate_cases_are_flagged(tmp_path):
    """p_ood at chance, a run shorter than early_max_step, too few rolling windows."""
    steps = [0] + list(range(25, 301, 25))
    run = write_matrix(tmp_path / "run", steps, planted(len(steps), seed=5))
    write_metrics(run, steps, [0.0, 0.0, 1 / 64, 0.0, 0.0, 1 / 64, 0.0, 0.0, 0.0, 2.5 / 64, 0.0, 0.0, 0.0])
    (run / "codewords.json").write_text(json.dumps({"codewords": ["x"] * 64, "count": 64}))
    s = Summary(run_analysis(run, AnalysisConfig(**{**FAST, "report": True})))
    assert {"p_ood_at_chance", "early_is_whole_run", "few_rolling_windows"} <= set(s.flag_codes)
    chance = next(f for f in s.flags if f["code"] == "p_ood_at_chance")
    assert "3/64 codewords" in chance["message"] and "correlations" in chance["stage"]
    assert s["correlations"]["p_ood_at_chance"] is True
    assert s["update_alignment"]["consecutive"]["early_is_whole_run"] is True
    assert s["rolling"]["n_windows"] == 3  # 12 rows, W = 10: 2 adjacent pairs
    report = (run / "analysis" / "report.md").read_text()
    assert "## Caveats" in report and "early (≤ 2000) = the whole run" in report and "**Caveat:**" in report
    assert s.headline()["analysis_flags"] == s.flag_codes


def test_healthy_run_has_no_flags(tmp_path):
    steps = list(range(0, 6001, 200))
    run = write_matrix(tmp_path / "run", steps, planted(len(steps), seed=6))
    write_metrics(run, steps, 0.5 + 0.3 * np.sin(np.asarray(steps) / 500))
    s = Summary(run_analysis(run, AnalysisConfig(**FAST)))
    assert s.flags == [] and "correlations" in s and "p_ood_at_chance" not in s["correlations"]


def test_too_short_for_rolling_windows(tmp_path):
    steps = list(range(0, 101, 20))
    run = write_matrix(tmp_path / "run", steps, planted(len(steps), seed=7))
    s = Summary(run_analysis(run, AnalysisConfig(**{**FAST, "figures": True, "report": True})))
    assert "skipped" in s["rolling"] and "rolling_skipped" in s.flag_codes and s.rho_mean is None
    assert "rotation.png" not in s["figures"]
    assert "Not enough snapshots" in (run / "analysis" / "report.md").read_text()


# ----------------------------------------------------------------------------- user stages
USER_STAGE = '''
from backbone_lab.analysis.stage import Flag, StageResult


class DriftAlignment:
    """cos(Δθ(final), v_b): how much of the final drift lies on the backbone."""

    name = "drift_alignment"
    requires = ("decomposition",)

    def run(self, ctx):
        dec = ctx.need("decomposition")
        value = float(dec.a[-1] / dec.norm_delta[-1])
        flags = [Flag("weak_backbone", "less than half of the drift is on the backbone")] if value < 0.5 else []
        return StageResult(summary={"cos_final": value, "steps": len(ctx.steps)},
                           report=f"## Drift alignment\\n\\ncos(Δθ(final), v_b) = {value:.4f}\\n", flags=flags)


def late_drift(ctx):
    return {"norm_delta_final": float(ctx.need("decomposition").norm_delta[-1])}
'''


def test_a_stage_from_a_temp_dir_runs_end_to_end(tmp_path, monkeypatch):
    """Adding a metric = one file: a module anywhere on sys.path, named in the config."""
    (tmp_path / "my_stages").mkdir()
    (tmp_path / "my_stages" / "drift_metric.py").write_text(USER_STAGE)
    monkeypatch.syspath_prepend(str(tmp_path / "my_stages"))
    steps = list(range(0, 2001, 100))
    run = write_matrix(tmp_path / "run", steps, planted(len(steps)))
    cfg = AnalysisConfig(stages=["pca", "decomposition", "drift_metric:DriftAlignment"], extra_stages=["drift_metric:late_drift"],
                         **{**FAST, "report": True})
    s = Summary(run_analysis(run, cfg))
    dec = s["decomposition"]
    assert s["drift_alignment"]["cos_final"] == pytest.approx(dec["a_final"] / dec["norm_delta_final"], rel=1e-12)
    assert s["late_drift"] == {"norm_delta_final": pytest.approx(dec["norm_delta_final"], rel=1e-12)}
    assert s["stages"] == ["pca", "decomposition", "drift_alignment", "late_drift"]
    assert "rolling" not in s and "update_alignment" not in s  # only the configured stages ran
    on_disk = json.loads((run / "analysis" / "summary.json").read_text())
    assert on_disk["drift_alignment"]["steps"] == len(steps)
    report = (run / "analysis" / "report.md").read_text()
    assert "## Drift alignment" in report and "## late_drift" in report
    assert report.index("## Backbone decomposition") < report.index("## Drift alignment")


def test_stage_order_and_unknown_names_fail_early(tmp_path):
    steps = list(range(0, 1001, 100))
    run = write_matrix(tmp_path / "run", steps, planted(len(steps)))
    with pytest.raises(ValueError, match="needs \\['pca'\\] earlier"):
        run_analysis(run, AnalysisConfig(stages=["decomposition"], **FAST))
    with pytest.raises(ValueError, match="unknown stages"):
        check_stage_names(AnalysisConfig(stages=["pca", "no_such_stage"]))
    with pytest.raises(ValueError, match="must not repeat"):
        check_stage_names(AnalysisConfig(extra_stages=["pca"]))
    with pytest.raises(ValueError, match="unknown stages"):  # before any snapshot is read
        run_analysis(tmp_path / "nowhere", AnalysisConfig(stages=["pca", "no_such_stage"]))
    with pytest.raises(ValueError, match="cannot be imported"):
        run_analysis(run, AnalysisConfig(stages=["pca", "no_such_module_xyz:Stage"], **FAST))


def test_summary_headline_and_absent_blocks(tmp_path):
    steps = list(range(0, 2001, 100))
    run = write_matrix(tmp_path / "run", steps, planted(len(steps)))
    s = Summary(run_analysis(run, AnalysisConfig(**FAST)))
    h = s.headline()
    assert set(h) >= {"pc1_rownorm_pct", "pc1_raw_pct", "k95_raw", "drift", "backbone_frac_final",
                      "backbone_frac_mean", "rho_mean", "snapshots_used", "snapshots_dropped", "report"}
    assert h["pc1_rownorm_pct"] == s["pca"]["rownorm"]["pc1_pct"] and h["drift"] == s["decomposition"]["norm_delta_final"]
    assert set(h) - {"snapshots_used", "snapshots_dropped", "analysis_flags", "report"} == {
        name for name, num in s.declarations().items() if num.headline and s.value(name) is not None}
    assert h["report"].endswith("analysis/report.md")
    # one declaration per number: the older accessor names answer the same number
    assert s.drift_final == s.drift == s.value("drift_norm_final") == s["decomposition"]["norm_delta_final"]
    assert s.update_mean_abs_cos == s.update_abs_cos is not None and s.k95_raw == s["pca"]["raw"]["k95"]
    assert s.update_abs_cos == s["update_alignment"]["fixed_lag"]["mean_abs_cos"]
    # a summary.json written before the numbers table existed answers from the built-in declarations
    old = Summary({k: v for k, v in s.items() if k != "numbers"})
    assert old.numbers() == s.numbers() and old.headline() == h
    with pytest.raises(AttributeError, match="no_such_number"):
        s.no_such_number
    empty = Summary()
    assert empty.pc1_raw_pct is None and empty.update_mean_abs_cos is None and empty.headline() == {"report": "report.md"}
    (tmp_path / "x").mkdir()
    out = Summary({"n": float("nan"), "v": np.float64(2.0)}).write(tmp_path / "x" / "summary.json")
    assert Summary.read(tmp_path / "x").to_dict() == {"n": None, "v": 2.0}  # JSON-safe, atomic (no temp left)
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["summary.json"] and out.name == "summary.json"
