"""The claims check of `backbone_lab.compare`: the claim file format, every verdict on planted
summaries (holds / does not hold / not testable here, with its reason), a user claim file through
the CLI, and verdicts on numbers the analysis really computed from trajectories."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from backbone_lab.compare import compare, discover_runs
from backbone_lab.compare.claim_file import ClaimFileError, load_claims, paper_claims, parse_claims
from backbone_lab.compare.claim_metrics import METRICS
from backbone_lab.compare.claims import FAILS, FRAGILE, HOLDS, UNTESTABLE, check_claim, check_claims
from backbone_lab.compare.grouping import label_runs
from backbone_lab.run_markers import write_marker

ADAMW = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "betas": [0.9, 0.95], "weight_decay": 0.5}
SGDM = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1e-2, "momentum": 0.9, "weight_decay": 0.05}


def config(**over) -> dict:
    cfg = {"model": {"name": "tiny"}, "data": {"source": "synthetic", "p_probe": 0.1}, "optimizer": dict(ADAMW),
           "objective": {"lambda_schedule": [[0, 2.0]]}, "train": {"max_steps": 100, "eval_every": 10},
           "analysis": {"anchor_step": 1}, "seed": 42, "init_from": None}
    for dotted, value in over.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


def planted_run(path: Path, cfg: dict, summary: dict, p_ood=(0.0, 0.3, 0.6, 0.5), state: str = "done",
                n_codewords: int = 64) -> Path:
    """A run folder with a config, eval metrics and an analysis summary (no trajectory)."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    with open(path / "eval_metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "val_loss", "p_ood"])
        for i, p in enumerate(p_ood):
            w.writerow([1 + 10 * i, 4.0 - 0.1 * i, p])
    (path / "analysis").mkdir()
    (path / "analysis" / "summary.json").write_text(json.dumps({"eval_metrics": {"n_codewords": n_codewords}, **summary}))
    if state == "done":
        write_marker(path, "DONE", {"status": "done"})
    elif state == "diverged":
        write_marker(path, "DONE", {"status": "diverged", "diverged_at_step": 7})
    return path


def pca(pc1: float, k95: int = 3) -> dict:
    return {"pca": {"rownorm": {"pc1_pct": pc1, "k95": k95}, "raw": {"pc1_pct": pc1 + 10, "k95": 1}}}


def claim(**node) -> dict:
    return {"format": "backbone_lab.claims", "version": 1, "claims": [{"id": "c", "statement": "s", **node}]}


def verdict(tmp_path, doc: dict):
    runs = discover_runs([tmp_path])
    label_runs(runs)
    return check_claim(parse_claims(doc)[0], runs)


# ----------------------------------------------------------------------------- the file format
def test_the_paper_claims_file_loads_and_uses_known_metrics():
    claims = paper_claims()
    assert len(claims) >= 20 and len({c.id for c in claims}) == len(claims)
    assert all(c.metric in METRICS and c.section and c.paper for c in claims)
    ids = {c.id for c in claims}
    for needed in ("backbone_dominance", "rolling_stability", "reorientation_after_reweighting", "gradient_update_gap",
                   "sgd_family_less_rich_than_adamw", "beta2_degrades_dominance", "beta2_degrades_reheating",
                   "reheating_keeps_backbone", "reheating_moves_transverse"):
        assert needed in ids


@pytest.mark.parametrize("bad, message", [
    ({"format": "x"}, "not a claim file"),
    (claim(metric="nope", expect={"at_least": 1}), "unknown metric"),
    (claim(metric="drift", expect={"at_least": 1, "above": {"runs": {}}}), "exactly one check"),
    (claim(metric="drift", runs={"optimiser": "AdamW"}, expect={"at_least": 1}), "unknown selector"),
    (claim(metric="drift", requires=["probe_learnt"], expect={"at_least": 1}), "unknown requires"),
    (claim(metric="drift", expect={"at_leest": 1}), "unknown keys"),
    (claim(metric="drift", expect={"above": {"optimizer": "AdamW"}}), "must be {runs"),
])
def test_a_bad_claim_fails_with_one_line_naming_it(bad, message):
    with pytest.raises(ClaimFileError, match=message):
        parse_claims(bad, "mine.yaml")


# ----------------------------------------------------------------------------- each verdict
def test_band_holds_fails_and_is_not_testable_without_runs(tmp_path):
    planted_run(tmp_path / "a", config(), pca(72.0))
    planted_run(tmp_path / "b", config(seed=1), pca(75.0))
    v = verdict(tmp_path, claim(metric="pc1_rownorm_pct", runs={"optimizer": "AdamW"}, expect={"at_least": 60, "at_most": 80}))
    assert v.verdict == HOLDS and "72" in v.ours and "75" in v.ours and len(v.used) == 2
    v = verdict(tmp_path, claim(metric="pc1_rownorm_pct", runs={"optimizer": "AdamW"}, expect={"at_least": 73}))
    assert v.verdict == FRAGILE and v.seeds == "1 of 2 seeds"  # seed 1 (75) holds, seed 42 (72) does not
    v = verdict(tmp_path, claim(metric="pc1_rownorm_pct", runs={"optimizer": "AdamW"}, expect={"at_least": 76}))
    assert v.verdict == FAILS and v.seeds == "0 of 2 seeds"
    v = verdict(tmp_path, claim(metric="pc1_rownorm_pct", runs={"optimizer": "AdamW"}, aggregate="any", expect={"at_least": 73}))
    assert v.verdict == HOLDS
    v = verdict(tmp_path, claim(metric="pc1_rownorm_pct", runs={"optimizer": "SGD+momentum"}, expect={"at_least": 95}))
    assert v.verdict == UNTESTABLE and v.why.startswith("runs missing: no run with optimizer=SGD+momentum")


def test_not_testable_says_why_probe_at_chance_diverged_metric_not_recorded(tmp_path):
    planted_run(tmp_path / "chance", config(), {**pca(70), "correlations": {"by_window": {"0-50": {"r": 0.4}}}},
                p_ood=(0.0, 0.02, 0.03, 0.01))
    planted_run(tmp_path / "div", config(seed=1), {**pca(70), "correlations": {"by_window": {"0-50": {"r": 0.4}}}},
                state="diverged")
    v = verdict(tmp_path, claim(metric="corr_early", runs={"optimizer": "AdamW"}, requires=["finished", "probe_learned"],
                                expect={"at_least": 0}))
    assert v.verdict == UNTESTABLE
    assert "p_ood at chance (best 0.030 ≤ 0.047 = 3/64 codewords)" in v.why and "diverged at step 7" in v.why
    v = verdict(tmp_path, claim(metric="update_over_grad", runs={"optimizer": "AdamW"}, expect={"at_least": 20}))
    assert v.verdict == UNTESTABLE and "callbacks=alignment" in v.why


def test_a_flagged_analysis_is_left_out_with_the_flag(tmp_path):
    summary = {**pca(70), "rolling": {"rho_min": 0.9}, "flags": [{"code": "few_rolling_windows", "message": "ρ from 2 pairs"}]}
    planted_run(tmp_path / "a", config(), summary)
    v = verdict(tmp_path, claim(metric="rho_min", unless_flags=["few_rolling_windows"], expect={"at_least": 0.7}))
    assert v.verdict == UNTESTABLE and "analysis flag few_rolling_windows: ρ from 2 pairs" in v.why


def test_comparison_with_a_matched_control_and_a_factor(tmp_path):
    planted_run(tmp_path / "adamw", config(), {**pca(70, k95=4), "decomposition": {"norm_delta_final": 3.0}})
    planted_run(tmp_path / "sgdm", config(optimizer=SGDM), {**pca(99, k95=1), "decomposition": {"norm_delta_final": 400.0}})
    planted_run(tmp_path / "sgdm_long", config(optimizer=SGDM, train__max_steps=999), pca(50, k95=9))
    sgd = {"optimizer": ["SGD", "SGD+momentum"]}
    doc = claim(metric="pc1_rownorm_pct", runs=sgd, expect={"above": {"runs": {"optimizer": "AdamW"}}})
    assert verdict(tmp_path, doc).verdict == FAILS  # the 999-step SGD run is below AdamW
    doc = claim(metric="k95_rownorm", runs={"optimizer": "AdamW"},
                expect={"above": {"runs": sgd, "same": ["train.max_steps"]}})
    v = verdict(tmp_path, doc)
    assert v.verdict == HOLDS and "sgdm_long" not in " ".join(v.used)  # only the matched control counts
    doc = claim(metric="drift", runs={"optimizer": "SGD+momentum", "train.max_steps": 100},
                expect={"above": {"runs": {"optimizer": "AdamW"}}, "factor": 100})
    assert verdict(tmp_path, doc).verdict == HOLDS  # 400 >= 100 x 3
    doc["claims"][0]["expect"]["factor"] = 200
    assert verdict(tmp_path, doc).verdict == FAILS
    doc = claim(metric="drift", runs={"optimizer": "AdamW"}, expect={"below": {"runs": {"optimizer": "Lion"}}})
    v = verdict(tmp_path, doc)
    assert v.verdict == UNTESTABLE and v.why.startswith("runs to compare with missing: no run with optimizer=Lion")


def test_ordering_along_beta2_with_tolerance_and_too_few_values(tmp_path):
    for b2, pc1 in ((0.99, 70.0), (0.95, 69.8), (0.8, 66.0), (0.0, 52.0)):
        planted_run(tmp_path / f"b{b2}", config(optimizer__betas=[0.9, b2]), pca(pc1))
    doc = claim(metric="pc1_rownorm_pct", runs={"optimizer": "AdamW"}, expect={"increases_with": "beta2"}, min_runs=3)
    v = verdict(tmp_path, doc)
    assert v.verdict == HOLDS and v.ours.startswith("beta2 0: 52")
    doc["claims"][0]["expect"] = {"decreases_with": "beta2"}
    assert verdict(tmp_path, doc).verdict == FAILS
    doc["claims"][0]["runs"] = {"optimizer": "AdamW", "beta2": {"min": 0.9}}
    doc["claims"][0]["expect"] = {"increases_with": "beta2"}
    v = verdict(tmp_path, doc)
    assert v.verdict == UNTESTABLE and "needs 3 distinct beta2 values, have 2" in v.why


def test_requires_some_makes_an_all_at_chance_sweep_untestable(tmp_path):
    for b2 in (0.99, 0.8, 0.0):
        planted_run(tmp_path / f"b{b2}", config(optimizer__betas=[0.9, b2]), pca(70), p_ood=(0.0, 0.01, 0.02))
    doc = claim(metric="best_p_ood", runs={"optimizer": "AdamW"}, requires_some=["probe_learned"],
                expect={"increases_with": "beta2"})
    v = verdict(tmp_path, doc)
    assert v.verdict == UNTESTABLE and "needs at least one run with probe_learned" in v.why and "at chance" in v.why


def test_lambda_switch_claims_need_the_phase_boundary_at_the_switch(tmp_path):
    switch = config(objective__lambda_schedule=[[0, 2.0], [40, 4.0]])
    planted_run(tmp_path / "sw", switch, {**pca(70), "phases": {"boundary_step": 50, "abs_overlap_vE_vL": 0.2}})
    claims = {c.id: c for c in paper_claims()}
    runs = discover_runs([tmp_path])
    v = check_claim(claims["reorientation_after_reweighting"], runs)
    assert v.verdict == UNTESTABLE and "phase boundary 50 is not the λ switch 40" in v.why


def test_reheating_reentry_needs_a_source_that_left_the_probe(tmp_path):
    src = planted_run(tmp_path / "src", config(), pca(70), p_ood=(0.0, 0.6, 0.9, 0.85))
    reheat = {"reheating": {"max_abs_a_rel_change": 0.04, "cos_displacement_vb": [None, 0.3, 0.5]}}
    planted_run(tmp_path / "rh" / "a", config(init_from=str(src)), reheat, p_ood=(0.85, 0.95, 0.9))
    claims = {c.id: c for c in paper_claims()}
    runs = discover_runs([tmp_path / "rh"])
    v = check_claim(claims["reheating_reenters_probe"], runs)
    assert v.verdict == UNTESTABLE and "never left the probe regime" in v.why
    assert check_claim(claims["reheating_keeps_backbone"], runs).verdict == HOLDS          # 4 % <= 10 %
    v = check_claim(claims["reheating_moves_transverse"], runs)
    assert v.verdict == HOLDS and "0.75" in v.ours                                         # 1 - 0.5²
    forgot = planted_run(tmp_path / "src2", config(seed=3), pca(70), p_ood=(0.0, 0.6, 0.9, 0.2))
    planted_run(tmp_path / "rh2" / "a", config(init_from=str(forgot)), reheat, p_ood=(0.2, 0.92, 0.5))
    runs = discover_runs([tmp_path / "rh2"])
    assert check_claim(claims["reheating_reenters_probe"], runs).verdict == HOLDS          # 0.92 >= 0.9
    assert check_claim(claims["reheating_is_transient"], runs).verdict == HOLDS            # 0.92 -> 0.5


# ----------------------------------------------------------------------------- a user claim file
def test_a_user_claim_file_is_checked_by_the_cli(tmp_path, capsys):
    from backbone_lab.compare.__main__ import main

    planted_run(tmp_path / "s" / "0", config(), pca(72.0))
    planted_run(tmp_path / "s" / "1", config(optimizer=SGDM), pca(99.5, k95=1))
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"format": "backbone_lab.claims", "version": 1, "claims": [
        {"id": "sgd_rank_one", "section": "my notebook", "statement": "SGD+momentum needs one component",
         "metric": "k95_rownorm", "runs": {"optimizer": "SGD+momentum"}, "expect": {"at_most": 1}, "paper": "k95 = 1"},
        {"id": "adamw_above_90", "statement": "AdamW PC1 above 90 %", "metric": "pc1_rownorm_pct",
         "runs": {"optimizer": "AdamW"}, "expect": {"at_least": 90}}]}))
    assert main([str(tmp_path / "s"), "--claims", str(mine), "--no-plots", "--no-wandb"]) == 0
    rows = {r["claim"]: r for r in csv.DictReader(open(tmp_path / "s" / "compare" / "claims.csv"))}
    assert rows["sgd_rank_one"]["verdict"] == HOLDS and rows["adamw_above_90"]["verdict"] == FAILS
    assert "backbone_dominance" in rows  # the paper's claims are checked too
    report = (tmp_path / "s" / "compare" / "report.md").read_text()
    assert "## Claims of the paper" in report and "sgd_rank_one" in report
    assert "sgd_rank_one" in capsys.readouterr().out
    assert main([str(tmp_path / "s"), "--claims", str(mine), "--no-paper-claims", "--no-plots", "--no-wandb"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "s" / "compare" / "claims.csv")))
    assert [r["claim"] for r in rows] == ["sgd_rank_one", "adamw_above_90"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: backbone_lab.claims\nversion: 1\nclaims: [{id: x, statement: s, metric: nope, expect: {at_least: 1}}]\n")
    assert main([str(tmp_path / "s"), "--claims", str(bad), "--no-wandb"]) == 2
    assert "unknown metric 'nope'" in capsys.readouterr().err


def test_claims_documented_format_example_parses():
    """The example at the top of claim_file.py is a valid claim."""
    from backbone_lab.compare import claim_file

    text = claim_file.__doc__.split("\n\n")[1]
    lines = [ln[4:] for ln in text.splitlines()]
    doc = yaml.safe_load("\n".join(lines))
    assert parse_claims(doc)[0].id == "sgd_family_less_rich"


# ----------------------------------------------------------------------------- real computed numbers
def _analysed_run(path: Path, optimizer: dict, n_dirs: int, seed: int) -> Path:
    """A run whose summary the analysis computes from a trajectory (n_dirs drift directions)."""
    from backbone_lab.analysis.config import AnalysisConfig
    from backbone_lab.analysis.run_analysis import run_analysis
    from backbone_lab.trajectory.store import TrajectoryWriter

    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config(optimizer=optimizer)))
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(n_dirs, 8, 16)).astype(np.float32)
    # initial weights independent of the drift: the backbone is not weight decay shrinking θ(anchor)
    init = rng.normal(size=(8, 16)).astype(np.float32)
    writer = TrajectoryWriter(path / "trajectory")
    for s in [0, 1, *range(5, 101, 5)]:
        coef = [s / 100] + [0.4 * np.sin(s * (k + 1) / 13.0) for k in range(n_dirs - 1)]
        writer.append(s, {"blocks.0.attn.qkv.weight": init + sum(c * d for c, d in zip(coef, dirs))})
    with open(path / "eval_metrics.csv", "w", newline="") as f:  # a model that learned: val 6.0 -> 4.0
        f.write("step,val_loss,p_ood\n" + "".join(f"{s},{6 - s / 50},0.0\n" for s in range(0, 101, 20)))
    run_analysis(path, AnalysisConfig(anchor_step=1, figures=False, progress=False))
    write_marker(path, "DONE", {"status": "done"})
    return path


def test_verdicts_on_numbers_the_analysis_computed(tmp_path):
    _analysed_run(tmp_path / "s" / "adamw", ADAMW, n_dirs=4, seed=0)
    _analysed_run(tmp_path / "s" / "sgdm", SGDM, n_dirs=1, seed=1)
    info = compare([tmp_path / "s"], tmp_path / "out", plots=False)
    rows = {r["claim"]: r for r in info["claims"]}
    assert rows["sgd_family_colinear"]["verdict"] == HOLDS                 # one drift direction: PC1 100 %
    assert rows["sgd_family_less_rich_than_adamw"]["verdict"] == HOLDS
    dominance = rows["backbone_dominance"]
    assert dominance["paper_band"].startswith(FAILS)                       # four directions: PC1 well below 60 %
    summary = json.loads((tmp_path / "s" / "adamw" / "analysis" / "summary.json").read_text())
    null = (summary.get("null_baseline") or {}).get("metrics", {}).get("pc1_rownorm_pct")
    if null is None:  # an analysis without a null baseline: the null-relative verdict cannot be given
        assert dominance["verdict"] == UNTESTABLE and "no null available" in dominance["why"]
    else:             # beyond the null band <=> above its 97.5 % quantile
        assert (dominance["verdict"] == HOLDS) == (summary["pca"]["rownorm"]["pc1_pct"] > null["hi"])
    assert rows["gradient_update_gap"]["verdict"] == UNTESTABLE           # no diagnostics recorded
    assert rows["reheating_keeps_backbone"]["why"].startswith("runs missing")
    ours = float(dominance["ours"].split(": ")[1])
    assert ours == pytest.approx(summary["pca"]["rownorm"]["pc1_pct"], rel=1e-3)


def test_an_ordering_within_protocols_is_not_pooled_across_them(tmp_path):
    for steps, pcs in ((100, (70.0, 66.0, 52.0)), (999, (60.0, 62.0))):
        for b2, pc1 in zip((0.99, 0.8, 0.0), pcs):
            planted_run(tmp_path / f"s{steps}_b{b2}", config(optimizer__betas=[0.9, b2], train__max_steps=steps), pca(pc1))
    doc = claim(metric="pc1_rownorm_pct", runs={"optimizer": "AdamW"}, min_runs=3,
                expect={"increases_with": "beta2", "within": ["train.max_steps"]})
    v = verdict(tmp_path, doc)
    assert v.verdict == HOLDS  # the 999-step group has 2 beta2 values: skipped, not pooled with the 100-step one
    assert "[train.max_steps=100] beta2 0: 52" in v.ours and "skipped train.max_steps=999: needs 3 distinct" in v.why
    doc["claims"][0]["min_runs"] = 2
    assert verdict(tmp_path, doc).verdict == FAILS  # 999 steps: 62 % at beta2 0.8 > 60 % at 0.99
