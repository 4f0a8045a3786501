"""W&B shows the analysis over time, not only its final numbers: a(t), ‖r(t)‖, f_b(t), ρ(t) and the
update |cos| per step as W&B tables with line plots, and the run's last `trainer/global_step` is
its number of optimizer steps — read back from the offline run file of a real tiny run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from backbone_lab.analysis.summary import Summary
from backbone_lab.loggers import analysis_series
from backbone_lab.run_dir import RunDir
from conftest import TINY_OVERRIDES, compose_config
from test_wandb_geometry import offline_run


def _train_offline(tmp: Path, *extra: str):
    import os

    from backbone_lab.train import train

    old = {k: os.environ.get(k) for k in ("HOME", "WANDB_API_KEY")}
    os.environ["HOME"] = str(tmp)  # no credentials: offline
    os.environ.pop("WANDB_API_KEY", None)
    try:
        cfg = compose_config(TINY_OVERRIDES + [f"run_dir={tmp / 'run'}", f"paths.cache_dir={tmp / 'cache'}",
                                               "logger=wandb", "logger.wandb.mode=offline", *extra])
        result = train(cfg)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return tmp / "run", result, offline_run(tmp / "run")


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    return _train_offline(tmp_path_factory.mktemp("wandb_series"), "analysis.rolling_window=4")


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_last_global_step_is_the_runs_step_count(wandb_run):
    _, result, wb = wandb_run
    assert result["steps_done"] == 30
    assert wb["summary"]["trainer/global_step"] == 30
    assert max(r["trainer/global_step"] for r in wb["history"] if "trainer/global_step" in r) == 30


def test_without_an_analysis_the_last_global_step_is_still_the_step_count(tmp_path):
    _, result, wb = _train_offline(tmp_path, "analyze=false")
    assert result["steps_done"] == 30 and "pc1_rownorm_pct" not in result
    assert wb["summary"]["trainer/global_step"] == 30
    assert not any(k.startswith("analysis/") for r in wb["history"] for k in r)


def test_the_series_are_wandb_tables_with_line_plots(wandb_run):
    run, _, wb = wandb_run
    summary = Summary(json.loads(RunDir(run).summary.read_text()))
    series = analysis_series(summary, RunDir(run))
    assert set(series) == {"decomposition", "rotation", "update_alignment"}
    row = next(r for r in wb["history"] if "analysis/series/decomposition" in r)
    files = next((run / "wandb").glob("offline-run-*/files"))
    for name, (columns, rows) in series.items():
        entry = row[f"analysis/series/{name}"]
        assert entry["_type"] == "table-file" and entry["nrows"] == len(rows)
        table = json.loads((files / entry["path"]).read_text())
        assert table["columns"] == columns
        assert len(table["data"]) == len(rows)
        for got, want in zip(table["data"], rows):
            assert got == pytest.approx(want, nan_ok=True)
    visualize = wb["config"]["_wandb"]["visualize"]
    for key in ("decomposition/a", "decomposition/norm_r", "decomposition/backbone_frac", "rotation/rho",
                "update_alignment/abs_cos"):
        panel = visualize[f"analysis/plots/{key}"]
        assert panel["panel_config"]["fieldSettings"]["x"] == "step"
        assert panel["panel_config"]["fieldSettings"]["y"] == key.split("/")[1]
    # the tables hold the analysis' own numbers
    ts = _csv(run / "analysis" / "timeseries.csv")
    columns, rows = series["decomposition"]
    assert [r[0] for r in rows] == [int(t["step"]) for t in ts] == summary.steps
    assert [r[1] for r in rows] == [float(t["a_t"]) for t in ts]
    roll = _csv(run / "analysis" / "rolling.csv")
    assert series["rotation"][1][0] == pytest.approx([(float(roll[0]["centre"]) + float(roll[1]["centre"])) / 2,
                                                      float(roll[0]["rho_next"])])
    ua = _csv(run / "analysis" / "update_alignment.csv")
    trunk = [(int(r["step"]), float(r["abs_cos"])) for r in ua if r["subset"] == "trunk" and r["variant"] == "consecutive"]
    assert [tuple(r) for r in series["update_alignment"][1]] == trunk and len(trunk) == len(summary.steps) - 1
    assert any(r["subset"].startswith("block") for r in ua)  # per-block rows exist and are left out
