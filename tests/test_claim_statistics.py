"""Seeds as an axis in `backbone_lab.compare`: 95 % t intervals checked against textbook values
and by simulation, groups.csv, per-seed verdicts (fragile), paired orderings that fail on flat or
reversed trends, null-relative claims, protocol-respecting groups, runs that did not learn, matched
windows over every seed, execution records that differ within a group — all on planted runs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from backbone_lab.compare import compare, discover_runs
from backbone_lab.compare.claim_file import ClaimFileError, paper_claims, parse_claims
from backbone_lab.compare.claims import FAILS, FRAGILE, HOLDS, UNTESTABLE, check_claim
from backbone_lab.compare.grouping import label_runs
from backbone_lab.compare.seed_stats import effect_size, seed_interval, t_quantile_975
from test_claims import SGDM, claim, config, pca, planted_run

SEEDS = (1, 2, 3)


def verdict(paths, doc: dict):
    runs = discover_runs(paths if isinstance(paths, list) else [paths])
    label_runs(runs)
    return check_claim(parse_claims(doc)[0], runs)


def groups_csv(out: Path) -> list[dict]:
    return list(csv.DictReader(open(out / "groups.csv")))


# ----------------------------------------------------------------------------- intervals
@pytest.mark.parametrize("df, t", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045), (120, 1.980)])
def test_t_quantiles_are_the_textbook_values(df, t):
    assert t_quantile_975(df) == pytest.approx(t, abs=1e-3)


def test_interpolated_t_quantiles_are_close_and_monotone():
    assert t_quantile_975(50) == pytest.approx(2.009, abs=2e-3)    # tables: t(0.975, 50) = 2.0086
    assert t_quantile_975(1000) == pytest.approx(1.962, abs=2e-3)  # tables: 1.9623
    qs = [t_quantile_975(d) for d in range(1, 400)]
    assert all(a > b for a, b in zip(qs, qs[1:])) and qs[-1] > 1.96


def test_t_interval_matches_an_independent_computation():
    vals = [71.4, 71.7, 69.9]
    ci = seed_interval(vals)
    a = np.array(vals)
    half = 4.303 * a.std(ddof=1) / np.sqrt(3)  # t(0.975, 2) from the table of any statistics textbook
    assert (ci.n, ci.mean) == (3, pytest.approx(a.mean()))
    assert ci.lo == pytest.approx(a.mean() - half, abs=1e-9) and ci.hi == pytest.approx(a.mean() + half, abs=1e-9)
    assert seed_interval([1.0, 2.0, 3.0]).hi == pytest.approx(2 + 4.303 / math.sqrt(3))  # sd 1
    one = seed_interval([5.0, float("nan")])
    assert one.n == 1 and math.isnan(one.lo) and one.text() == "5 (one seed)"
    assert effect_size([1.0, 2.0, 3.0]) == pytest.approx(2.0) and math.isinf(effect_size([0.5, 0.5]))


def test_t_intervals_cover_the_true_mean_95_percent_of_the_time():
    """Normal draws, n = 3 and 8: the interval covers the true mean at the stated rate."""
    rng = np.random.default_rng(0)
    for n in (3, 8):
        draws = rng.normal(10.0, 2.0, size=(20000, n))
        half = t_quantile_975(n - 1) * draws.std(axis=1, ddof=1) / np.sqrt(n)
        cover = np.mean(np.abs(draws.mean(axis=1) - 10.0) <= half)
        assert cover == pytest.approx(0.95, abs=0.006)  # binomial sd 0.0015


# ----------------------------------------------------------------------------- groups.csv
def test_groups_csv_has_n_mean_and_interval_and_one_seed_says_so(tmp_path):
    for s, pc1 in zip(SEEDS, (70.0, 72.0, 74.0)):
        planted_run(tmp_path / "s" / f"a{s}", config(seed=s), pca(pc1))
    planted_run(tmp_path / "s" / "sgd", config(optimizer=SGDM), pca(99.0, k95=1))
    out = tmp_path / "out"
    compare([tmp_path / "s"], out, plots=False)
    rows = groups_csv(out)
    assert list(rows[0]) == ["group", "metric", "n", "mean", "ci_low", "ci_high", "note"]
    adamw = next(r for r in rows if r["metric"] == "pc1_rownorm_pct" and r["group"].startswith("AdamW"))
    assert (adamw["n"], float(adamw["mean"])) == ("3", 72.0)
    assert float(adamw["ci_high"]) == pytest.approx(72 + 4.303 * 2 / math.sqrt(3), abs=1e-3) and adamw["note"] == ""
    sgd = next(r for r in rows if r["metric"] == "pc1_rownorm_pct" and r["group"].startswith("SGD"))
    assert sgd["n"] == "1" and sgd["ci_low"] == sgd["ci_high"] == "" and sgd["note"] == "one seed"
    report = (out / "report.md").read_text()
    assert "95 % t interval over seeds" in report and "one seed" in report
    runs_section = report.split("## Runs")[1].split("## ")[0]  # the per-run table gains the group's mean row
    assert "| AdamW(lr=0.001): mean of 3 seeds [95 % t] |" in runs_section and "| 72 [67.03, 76.97] |" in runs_section
    assert len([r for r in csv.DictReader(open(out / "runs.csv"))]) == 4  # the CSV keeps one row per run


def test_groups_split_on_schedule_and_analysis_differences(tmp_path):
    for s in SEEDS[:2]:
        planted_run(tmp_path / "s" / f"cos{s}", config(seed=s, schedule={"warmup": 10, "total": 100}), pca(70.0 + s))
        planted_run(tmp_path / "s" / f"const{s}", config(seed=s, schedule={"warmup": 10, "total": None}), pca(80.0 + s))
        # the same trajectory analysed with another phase boundary is another group
        planted_run(tmp_path / "s" / f"pb{s}", config(seed=s, schedule={"warmup": 10, "total": 100}),
                    {**pca(70.0 + s), "config": {"phase_boundary": 40}})
    out = tmp_path / "out"
    compare([tmp_path / "s"], out, plots=False)
    pc1 = [r for r in groups_csv(out) if r["metric"] == "pc1_rownorm_pct"]
    assert sorted((r["n"], r["mean"]) for r in pc1) == [("2", "71.5"), ("2", "71.5"), ("2", "81.5")]
    assert len({r["group"] for r in pc1}) == 3 and any("phase_boundary=40" in r["group"] for r in pc1)
    # an ordering never pools protocols: the schedules are ordered separately
    for s in SEEDS[:2]:
        for b2, pc in ((0.8, 60.0), (0.99, 70.0)):
            planted_run(tmp_path / "o" / f"cos{s}_{b2}", config(seed=s, optimizer__betas=[0.9, b2],
                                                                schedule={"total": 100}), pca(pc + s))
            planted_run(tmp_path / "o" / f"con{s}_{b2}", config(seed=s, optimizer__betas=[0.9, b2],
                                                                schedule={"total": None}), pca(140 - pc))
    doc = claim(metric="pc1_rownorm_pct", runs={"optimizer": "AdamW"}, expect={"increases_with": "beta2"})
    v = verdict(tmp_path / "o", doc)
    assert v.verdict == FAILS and v.seeds.count("2 of 2 seeds") == 1 and v.seeds.count("0 of 2 seeds") == 1
    assert "protocol #1" in v.ours and "protocol #2" in v.ours


# ----------------------------------------------------------------------------- per-seed verdicts
def test_a_claim_true_in_two_of_three_seeds_is_fragile(tmp_path):
    for s, pc1 in zip(SEEDS, (72.0, 75.0, 58.0)):
        planted_run(tmp_path / f"a{s}", config(seed=s), pca(pc1))
    v = verdict(tmp_path, claim(metric="pc1_rownorm_pct", runs={"optimizer": "AdamW"}, expect={"at_least": 60}))
    assert v.verdict == FRAGILE and v.seeds == "2 of 3 seeds"
    assert "68.33 [" in v.ours and "(n=3)" in v.ours  # the group mean with its interval
    assert verdict(tmp_path, claim(metric="pc1_rownorm_pct", expect={"at_least": 50})).verdict == HOLDS
    assert verdict(tmp_path, claim(metric="pc1_rownorm_pct", expect={"at_least": 80})).verdict == FAILS
    planted_run(tmp_path / "lone" / "a", config(optimizer=SGDM), pca(99.0))
    v = verdict(tmp_path / "lone", claim(metric="pc1_rownorm_pct", expect={"at_least": 95}))
    assert v.verdict == HOLDS and v.seeds == "one seed: holds" and "[" not in v.ours  # never a fake interval


def _beta2_sweep(root: Path, values: dict[int, tuple[float, ...]], betas=(0.8, 0.9, 0.95, 0.99)) -> Path:
    for s, pcs in values.items():
        for b2, pc1 in zip(betas, pcs):
            planted_run(root / f"s{s}_b{b2}", config(seed=s, optimizer__betas=[0.9, b2]), pca(pc1))
    return root


ORDER = claim(metric="pc1_rownorm_pct", runs={"optimizer": "AdamW"}, min_runs=3,
              expect={"increases_with": "beta2", "min_effect": 1.0, "tolerance": 0.5})


@pytest.mark.parametrize("name, series", [
    ("reversed", (77.3, 76.9, 76.5, 75.7)),  # each step inside the 0.5 tolerance: a per-pair tolerance accumulates
    ("flat", (77.0, 77.0, 77.0, 77.0)),
    ("too small", (77.0, 77.2, 77.4, 77.5)),  # +0.5 < the 1-point minimum effect
])
def test_flat_reversed_and_too_small_orderings_fail(tmp_path, name, series):
    noise = {1: 0.0, 2: 0.1, 3: -0.1}
    _beta2_sweep(tmp_path, {s: tuple(x + noise[s] for x in series) for s in SEEDS})
    v = verdict(tmp_path, ORDER)
    assert v.verdict == FAILS and v.seeds == "0 of 3 seeds"
    assert f"seed 1: {name}" in v.why


def test_a_real_ordering_holds_with_its_paired_effect_and_a_two_of_three_trend_is_fragile(tmp_path):
    _beta2_sweep(tmp_path / "up", {1: (64.0, 66.7, 68.3, 68.8), 2: (63.5, 66.0, 68.9, 69.3), 3: (63.0, 67.2, 68.0, 68.5)})
    v = verdict(tmp_path / "up", ORDER)
    assert v.verdict == HOLDS and v.seeds == "3 of 3 seeds"
    diffs = np.array([68.8 - 64.0, 69.3 - 63.5, 68.5 - 63.0])
    half = 4.303 * diffs.std(ddof=1) / np.sqrt(3)
    assert f"+{diffs.mean():.4g} [{diffs.mean() - half:.4g}, {diffs.mean() + half:.4g}] (n=3)" in v.effect
    assert f"d_z {diffs.mean() / diffs.std(ddof=1):.4g}" in v.effect
    _beta2_sweep(tmp_path / "mixed", {1: (64.0, 66.7, 68.3, 68.8), 2: (63.5, 66.0, 68.9, 69.3), 3: (68.0, 67.9, 67.8, 67.7)})
    v = verdict(tmp_path / "mixed", ORDER)
    assert v.verdict == FRAGILE and v.seeds == "2 of 3 seeds" and "seed 3: reversed" in v.why


def test_the_shipped_beta2_claims_need_a_minimum_effect():
    claims = {c.id: c for c in paper_claims()}
    for cid in ("beta2_degrades_dominance", "beta2_degrades_update_alignment", "beta2_degrades_probe", "beta2_drift_ordering"):
        assert claims[cid].check.min_effect > 0, cid
        assert "seed" not in claims[cid].check.within  # seeds are paired, not split into one-run groups
    assert "backbone_fraction" not in claims  # the same number as backbone_dominance
    with pytest.raises(ClaimFileError, match="min_effect must be"):
        parse_claims(claim(metric="drift", expect={"increases_with": "beta2", "min_effect": "lots"}))


# ----------------------------------------------------------------------------- the null and controls
def _null(observed: float, lo: float, hi: float) -> dict:
    return {"null_baseline": {"method": "gram_random_walk", "draws": 64, "seed": 0, "metrics": {
        "pc1_rownorm_pct": {"observed": observed, "mean": (lo + hi) / 2, "lo": lo, "hi": hi, "beyond": observed > hi}},
        "shuffled": {"pc1_rownorm_pct": {"mean": 71.0, "lo": 65.0, "hi": 77.0}}}}


def test_backbone_dominance_holds_only_beyond_the_null_band(tmp_path):
    dominance = {c.id: c for c in paper_claims()}["backbone_dominance"]
    for s, hi in zip(SEEDS, (70.0, 71.0, 78.0)):  # seed 3: 72 % is inside a random walk's band
        planted_run(tmp_path / "n" / f"a{s}", config(seed=s), {**pca(72.0), **_null(72.0, 60.0, hi)})
    runs = discover_runs([tmp_path / "n"])
    label_runs(runs)
    v = check_claim(dominance, runs)
    assert v.verdict == FRAGILE and v.seeds == "2 of 3 seeds"
    assert v.paper_band == "holds (3 of 3 seeds)"  # 72 % is inside the paper's 60-80 % band
    assert "null mean" in v.null and "[60, 78]" in v.null and "shuffled increments: mean 71, band [65, 77]" in v.null
    planted_run(tmp_path / "old" / "a", config(), pca(72.0))  # an analysis from before the null baseline
    runs = discover_runs([tmp_path / "old"])
    v = check_claim(dominance, runs)
    assert v.verdict == UNTESTABLE and "no null available" in v.why and v.paper_band.startswith("holds")


def test_a_lambda_switch_gain_the_constant_lambda_control_also_shows_does_not_hold(tmp_path):
    gain_claim = {c.id: c for c in paper_claims()}["late_phase_gain_caused_by_reweighting"]
    switch = {"objective__lambda_schedule": [[0, 2.0], [40, 4.0]], "analysis__phase_boundary": 40}
    for s, (with_switch, control) in zip(SEEDS, ((21.0, 20.8), (23.0, 20.0), (22.0, 21.5))):
        phases = lambda gain: {"phases": {"boundary_step": 40, "pc1_early_pct": 60.0, "pc1_late_pct": 60.0 + gain}}
        planted_run(tmp_path / f"sw{s}", config(seed=s, **switch), {**pca(70), **phases(with_switch)})
        planted_run(tmp_path / f"c{s}", config(seed=s, analysis__phase_boundary=40), {**pca(70), **phases(control)})
    runs = discover_runs([tmp_path])
    label_runs(runs)
    v = check_claim(gain_claim, runs)
    assert v.verdict == FRAGILE and v.seeds == "1 of 3 seeds"  # only seed 2 beats its own control by 2 points
    assert "ours − control: 1.233 [" in v.effect


# ----------------------------------------------------------------------------- runs that did not train
def test_a_non_learning_sgd_control_is_excluded_with_the_stated_reason(tmp_path):
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5, "momentum": 0.0, "weight_decay": 0.5}
    planted_run(tmp_path / "sgd", config(optimizer=sgd), {**pca(100.0, k95=1), "learning": {
        "val_loss_first": 6.25, "val_loss_last": 6.24, "drop": 0.01}})
    planted_run(tmp_path / "adamw", config(), pca(70.0))
    runs = discover_runs([tmp_path])
    label_runs(runs)
    claims = {c.id: c for c in paper_claims()}
    for cid in ("sgd_family_colinear", "sgd_family_less_rich_than_adamw", "sgd_does_not_learn_probe"):
        v = check_claim(claims[cid], runs)
        assert v.verdict == UNTESTABLE, cid
        assert "did not learn: val loss 6.25 → 6.24 (drop 0.01 < 0.1 nats/token)" in v.why, cid
    row = check_claim(claims["sgd_family_colinear"], runs).row()
    assert "trained: finished (did not diverge) and learned" in row["requires"]


# ----------------------------------------------------------------------------- execution records
def test_execution_details_that_differ_within_a_group_are_flagged(tmp_path):
    for s, threads in zip(SEEDS, (1, 2, 1)):
        run = planted_run(tmp_path / "s" / f"a{s}", config(seed=s), pca(70.0 + s))
        (run / "execution.json").write_text(json.dumps({"threads": threads, "torch_version": "2.13", "device": "cpu",
                                                        "precision": "32-true", "deterministic": True, "world_size": 1}))
    out = tmp_path / "out"
    info = compare([tmp_path / "s"], out, plots=False)
    rows = [r for r in groups_csv(out) if r["metric"] == "pc1_rownorm_pct"]
    assert len(rows) == 1 and rows[0]["note"] == "execution differs: threads 1 / 2"
    dominance = next(r for r in info["claims"] if r["claim"] == "backbone_dominance")
    assert "execution differs within" in dominance["why"] and "threads 1 / 2" in dominance["why"]


def test_the_time_an_execution_record_was_written_is_not_an_execution_difference(tmp_path):
    for i, s in enumerate(SEEDS):
        run = planted_run(tmp_path / "s" / f"a{s}", config(seed=s), pca(70.0 + s))
        (run / "execution.json").write_text(json.dumps({"torch_threads": 1, "torch_version": "2.13", "device": "cpu",
                                                        "written_at": f"2026-12-04T16:5{i}:18Z"}))
    out = tmp_path / "out"
    info = compare([tmp_path / "s"], out, plots=False)
    rows = [r for r in groups_csv(out) if r["metric"] == "pc1_rownorm_pct"]
    assert len(rows) == 1 and rows[0]["note"] == ""
    dominance = next(r for r in info["claims"] if r["claim"] == "backbone_dominance")
    assert "execution differs" not in dominance["why"] and "written_at" not in dominance["why"]


# ----------------------------------------------------------------------------- matched windows
def test_matched_windows_keep_every_seed_and_say_why_a_run_is_dropped(tmp_path):
    from backbone_lab.compare.tables import matched_pairs, matched_windows_table
    from test_compare import BASE, _merge, make_run

    sgdm = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1e-2, "momentum": 0.9, "weight_decay": 0.05}
    for s in (1, 2):
        make_run(tmp_path / f"adamw{s}", _merge(BASE, seed=s), val_end=3.0 + 0.1 * s, drift_dirs=2, seed=s)
        make_run(tmp_path / f"sgdm{s}", _merge(BASE, seed=s, optimizer=sgdm), val_end=4.0 + 0.1 * s, seed=10 + s)
    make_run(tmp_path / "adamw_long", _merge(BASE, seed=1, train__max_steps=48), drift_dirs=2, seed=5)
    runs = discover_runs([tmp_path])
    label_runs(runs)
    pairs, dropped = matched_pairs(runs)
    assert sorted((a.cfg("seed"), b.cfg("seed")) for a, b in pairs) == [(1, 1), (1, 1), (2, 2), (2, 2)]  # same seeds
    assert [(r.name, why) for r, why in dropped] == [
        ("adamw_long", "no finished SGD+momentum run with the same model, data and steps to match its loss")]
    rows = matched_windows_table(runs)
    by_name = {r.name: r.label for r in runs}
    arm = {"adamw1": "A", "adamw2": "A", "sgdm1": "C", "sgdm2": "C"}
    assert {(r["arm"], r["run"]) for r in rows} == {(a, by_name[n]) for n, a in arm.items()}  # every seed of both arms
    targets = {r["run"]: r["target_val_loss"] for r in rows if r["arm"] == "A"}
    assert targets[by_name["adamw1"]] == pytest.approx(4.1) and targets[by_name["adamw2"]] == pytest.approx(4.2)
    matched = {c.id: c for c in paper_claims()}["matched_loss_geometry"]
    v = check_claim(matched, runs)
    assert f"({by_name['adamw_long']}): no finished SGD+momentum run with the same model, data and steps" in v.why


# ----------------------------------------------------------------------------- figures and W&B
def test_overlays_draw_a_group_mean_with_a_labelled_band(tmp_path):
    from matplotlib.collections import PolyCollection

    from backbone_lab.analysis.plotting import pyplot
    from backbone_lab.compare.plots import PANELS, draw_panel, group_colors
    from test_compare import BASE, _merge, make_run

    for s in SEEDS:
        make_run(tmp_path / f"a{s}", _merge(BASE, seed=s), val_end=3.0 + 0.1 * s, seed=s)
    make_run(tmp_path / "b", _merge(BASE, optimizer={**BASE["optimizer"], "lr": 5e-4}), val_end=3.5)
    runs = discover_runs([tmp_path])
    label_runs(runs)
    plt = pyplot()
    fig, ax = plt.subplots()
    assert draw_panel(ax, runs, {p.stem: p for p in PANELS}["val_loss"], group_colors(runs))
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert "lr=0.001: mean of 3 seeds ± 95 % t band" in labels and "lr=0.0005, seed=42" in labels
    band = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(band) == 1
    final = [3.1, 3.2, 3.3]  # the seeds' last val losses: the band's right edge is their t interval
    xy = band[0].get_paths()[0].vertices
    ys = xy[xy[:, 0] == xy[:, 0].max(), 1]  # the band at the last evaluation (step 40)
    ci = seed_interval(final)
    assert max(ys) == pytest.approx(ci.hi) and min(ys) == pytest.approx(ci.lo)
    plt.close("all")


def test_the_cli_writes_a_sweep_level_wandb_run_offline_without_torch(tmp_path):
    """`python -m backbone_lab.compare` with torch blocked (compare never needs it) and no W&B key."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    for s in SEEDS:
        planted_run(tmp_path / "s" / f"a{s}", config(seed=s, experiment_name="seeds_tiny"), pca(70.0 + s))
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path / "home"), "WANDB_SILENT": "true",
           "WANDB_CACHE_DIR": str(tmp_path / "wc"), "WANDB_CONFIG_DIR": str(tmp_path / "wcfg")}
    env.pop("WANDB_API_KEY", None)  # and no ~/.netrc in HOME: offline
    code = ("import sys; sys.modules['torch'] = None; from backbone_lab.compare.__main__ import main; "
            f"sys.exit(main([{str(tmp_path / 's')!r}, '--no-plots']))")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "W&B run (job_type compare)" in p.stdout
    runs = sorted((tmp_path / "s" / "compare" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert b"compare" in next(runs[0].glob("run-*.wandb")).read_bytes()  # job_type
    table = json.loads(next((runs[0] / "files" / "media" / "table").glob("groups_*.table.json")).read_text())
    assert table["columns"] == ["group", "metric", "n", "mean", "ci_low", "ci_high", "note"]
    pc1 = next(row for row in table["data"] if row[1] == "pc1_rownorm_pct")
    assert pc1[2:4] == [3, 72.0] and pc1[5] == pytest.approx(72 + 4.303 / math.sqrt(3), abs=1e-3)
    assert list((runs[0] / "files" / "media" / "table").glob("claims_*.table.json"))
    assert "## W&B" in (tmp_path / "s" / "compare" / "report.md").read_text()


# ----------------------------------------------------------------------------- a real 3-seed sweep
@pytest.mark.slow
def test_a_three_seed_tiny_sweep_end_to_end(tmp_path):
    """`+experiment=seeds_tiny debug=tiny` over 3 seeds (30 steps each), then the compare CLI:
    one seed group of n = 3 whose interval matches an independent numpy computation, per-seed
    verdicts, groups.png and the offline W&B compare run."""
    import os
    import subprocess
    import sys

    from backbone_lab.compare.__main__ import main
    from conftest import REPO

    env = {**os.environ, "BACKBONE_LAB_OUTPUT": str(tmp_path / "out"), "WANDB_SILENT": "true", "HOME": str(tmp_path),
           "WANDB_CACHE_DIR": str(tmp_path / "wc"), "WANDB_CONFIG_DIR": str(tmp_path / "wcfg"), "PYTHONPATH": str(REPO)}
    env.pop("WANDB_API_KEY", None)
    cmd = [sys.executable, "-m", "backbone_lab", "-m", "+experiment=seeds_tiny", "debug=tiny", "seed=1,2,3",
           "analysis.figures=false", f"paths.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = next((tmp_path / "out" / "seeds_tiny").iterdir())
    old_home = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp_path)  # no ~/.netrc: the W&B run is offline
    try:
        assert main([str(sweep)]) == 0
    finally:
        if old_home is not None:
            os.environ["HOME"] = old_home
    out = sweep / "compare"
    pc1 = np.array([json.loads((job / "analysis" / "summary.json").read_text())["pca"]["rownorm"]["pc1_pct"]
                    for job in sorted(sweep.iterdir()) if (job / "analysis").is_dir()])
    assert len(pc1) == 3
    row = next(r for r in groups_csv(out) if r["metric"] == "pc1_rownorm_pct")
    half = 4.303 * pc1.std(ddof=1) / np.sqrt(3)
    assert row["n"] == "3" and float(row["mean"]) == pytest.approx(pc1.mean())
    assert float(row["ci_low"]) == pytest.approx(pc1.mean() - half) and float(row["ci_high"]) == pytest.approx(pc1.mean() + half)
    claims = {r["claim"]: r for r in csv.DictReader(open(out / "claims.csv"))}
    per_block = claims["per_block_dominance"]  # a band without a null: judged per seed
    k = int(per_block["seeds"].split(" of ")[0])
    assert per_block["seeds"].endswith("of 3 seeds")
    assert per_block["verdict"] == (HOLDS if k == 3 else FAILS if k == 0 else FRAGILE)
    dominance = claims["backbone_dominance"]
    assert dominance["paper_band"].endswith("of 3 seeds)")
    in_band = sum(60 <= x <= 80 for x in pc1)
    assert dominance["paper_band"].startswith(HOLDS if in_band == 3 else FAILS if in_band == 0 else FRAGILE)
    assert (out / "groups.png").exists()
    wandb_runs = list((out / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 1 and list((wandb_runs[0] / "files" / "media" / "table").glob("groups_*.table.json"))


def test_an_sgd_backbone_that_is_weight_decay_shrinkage_is_left_out(tmp_path):
    planted_run(tmp_path / "sgdm", config(optimizer=SGDM), {**pca(99.9, k95=1), "shrinkage_cos": 0.988})
    planted_run(tmp_path / "sgdm2", config(optimizer=SGDM, seed=7), {**pca(99.0, k95=1), "shrinkage_cos": 0.31})
    runs = discover_runs([tmp_path])
    label_runs(runs)
    v = check_claim({c.id: c for c in paper_claims()}["sgd_family_colinear"], runs)
    assert v.verdict == HOLDS and v.seeds == "one seed: holds" and len(v.used) == 1
    assert "weight-decay shrinkage of θ(anchor): |cos(v_b, θ(anchor))| = 0.988 ≥ 0.95" in v.why


def test_an_ordering_pairs_only_seeds_present_at_every_value(tmp_path):
    _beta2_sweep(tmp_path, {1: (64.0, 66.0, 68.0, 69.0), 2: (63.0, 65.0, 67.0, 70.0)})
    planted_run(tmp_path / "s9", config(seed=9, optimizer__betas=[0.9, 0.99]), pca(50.0))  # one value only
    v = verdict(tmp_path, ORDER)
    assert v.verdict == HOLDS and v.seeds == "2 of 2 seeds"  # seed 9's 50 % at beta2 0.99 pairs with nothing
    assert "seed 9 not at every beta2 value: left out of the pairing" in v.why
    assert "beta2 0.99: 63" in v.ours  # the level means still show every run (69, 70, 50)


# ----------------------------------------------------------------------------- null keys and labels
def test_every_null_relative_claim_finds_its_metric_in_the_analysis_null_baseline():
    from backbone_lab.analysis.null_baseline import METRICS as NULL_METRICS
    from backbone_lab.compare.claim_metrics import METRICS

    for c in paper_claims():
        if c.null:
            m = METRICS[c.metric]
            assert m.null_key in NULL_METRICS or m.name in NULL_METRICS, (c.id, m.null_key)


def test_early_update_alignment_is_judged_against_its_null_band(tmp_path):
    aligns = {c.id: c for c in paper_claims()}["updates_align_with_backbone"]
    for s, (obs, hi) in zip(SEEDS, ((0.32, 0.20), (0.31, 0.19), (0.25, 0.30))):  # seed 3 inside its null band
        null = {"null_baseline": {"metrics": {"update_mean_abs_cos_early": {
            "observed": obs, "mean": hi - 0.01, "lo": hi - 0.02, "hi": hi, "beyond": obs > hi}}}}
        ua = {"update_alignment": {"fixed_lag": {"mean_abs_cos": obs, "mean_abs_cos_early": obs}}}
        planted_run(tmp_path / f"a{s}", config(seed=s), {**pca(72.0), **ua, **null})
    runs = discover_runs([tmp_path])
    label_runs(runs)
    v = check_claim(aligns, runs)
    assert v.verdict == FRAGILE and v.seeds == "2 of 3 seeds", (v.verdict, v.why)
    assert v.paper_band == "holds (3 of 3 seeds)" and "[0.17, 0.3]" in v.null


def test_an_unfinished_run_does_not_make_every_analysis_setting_a_label(tmp_path):
    for s in SEEDS[:2]:
        planted_run(tmp_path / f"a{s}", config(seed=s), {**pca(70.0 + s), "config": {"phase_boundary": 40}})
    unfinished = tmp_path / "a3"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text(json.dumps(config(seed=SEEDS[2])))  # killed before its analysis
    runs = discover_runs([tmp_path])
    label_runs(runs)
    assert [r.state for r in runs].count("unfinished") == 1
    assert all("analysis" not in r.label and "phase_boundary" not in r.label for r in runs), [r.label for r in runs]
