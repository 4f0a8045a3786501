"""The per-run report as a reader sees it: correlations rounded consistently and withheld on too
few points, power-law fits judged by their printed R², zoomed axes, the paper's sections cited,
and no per-block figure when a table says more (the figures themselves were looked at)."""

from __future__ import annotations

import re

import numpy as np

from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.plotting import zoomed_limits
from backbone_lab.analysis.powerlaw import pearson
from backbone_lab.analysis.run_analysis import run_analysis
from backbone_lab.analysis.stages.correlations import MIN_CI_POINTS, correlation_cells
from backbone_lab.analysis.stages.fits import adequate_fit, r2_cell
from backbone_lab.analysis.stages.pca import shown_components
from test_analysis_pipeline import planted, write_matrix, write_metrics


def _interval(text: str) -> tuple[float, float]:
    lo, hi = re.fullmatch(r"\[([-+0-9.]+), ([-+0-9.]+)\]", text).groups()
    return float(lo), float(hi)


def test_printed_estimate_lies_inside_its_printed_interval():
    # the case: +0.986 [0.99, 1.00] printed the estimate outside its interval
    est, interval = correlation_cells({"r": 0.986, "ci_low": 0.987, "ci_high": 0.9996, "n": 12})
    lo, hi = _interval(interval)
    assert est == "+0.99" and lo <= float(est) <= hi
    rng = np.random.default_rng(3)
    for n in (8, 12, 30):  # real bootstrap intervals of strongly correlated samples
        x = np.arange(n, dtype=float)
        c = pearson(x, x + 0.3 * rng.standard_normal(n), n_boot=500, seed=1)
        est, interval = correlation_cells(c)
        lo, hi = _interval(interval)
        assert lo <= float(est) <= hi, (c, est, interval)


def test_correlations_on_fewer_than_eight_points_print_no_interval():
    rng = np.random.default_rng(0)
    x = np.arange(MIN_CI_POINTS - 1, dtype=float)
    c = pearson(x, x + rng.standard_normal(len(x)), n_boot=200)
    assert c["ci_low"] is not None  # an interval exists, but on 7 points it means little
    est, interval = correlation_cells(c)
    assert est.startswith(("+", "-")) and interval.startswith("too few points")
    assert correlation_cells({"r": None, "n": 2})[1].startswith("too few points")


def test_fits_are_judged_on_the_printed_r2():
    assert adequate_fit(0.8996, 20) and r2_cell(0.8996, 20) == "0.90"  # printed 0.90: not called poor
    assert not adequate_fit(0.49, 20) and r2_cell(0.49, 20) == "0.49 (poor)"
    assert not adequate_fit(1.0, 2)  # two points fit exactly
    assert not adequate_fit(None, 10)


def test_axis_limits_zoom_to_bounded_data():
    lo, hi = zoomed_limits([0.83, 0.88, 0.93])
    assert 0.8 < lo < 0.83 and 0.93 < hi <= 1.005
    assert zoomed_limits([0.1, 0.9]) == (0.0, 1.02)  # data fill the range: the bounds
    lo, hi = zoomed_limits([0.999, 0.9995])
    assert hi <= 1.005 and hi - lo >= 0.05 - 1e-12
    assert shown_components(2) == 10 and shown_components(17) == 17


def test_report_cites_the_paper_and_tables_replace_small_figures(tmp_path):
    steps = list(range(0, 401, 20))
    run = write_matrix(tmp_path / "run", steps, planted(len(steps), D=96, seed=2))
    write_metrics(run, steps[::4], np.linspace(0.1, 0.8, len(steps[::4])))  # 6 evaluations: too few for an interval
    s = run_analysis(run, AnalysisConfig(corr_bootstrap=200, progress=False, rolling_window=5))
    report = (run / "analysis" / "report.md").read_text()
    assert "SPEC" not in report and not re.search(r"\bW\d+\b", report)
    for section in ("paper §3.1", "paper §3.3", "paper §4.2", "paper §4.5", "paper §4.6", "paper §4.8"):
        assert section in report, section
    assert "too few points" in report and "[-1.00, 1.00]" not in report
    figures = set(s["figures"])
    assert {"spectrum.png", "loglog.png", "rotation.png", "update_alignment.png"} <= figures
    assert "per_block.png" not in figures and "| block0 |" in report  # 2 blocks: the table, no figure
