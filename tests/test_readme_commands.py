"""The README's commands themselves: `make demo` (shortened through ARGS) end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import REPO


@pytest.mark.slow
def test_make_demo_trains_analyses_and_reports(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = dict(os.environ, BACKBONE_LAB_OUTPUT=str(tmp_path / "out"), BACKBONE_LAB_CACHE=str(tmp_path / "cache"))
    args = "train.max_steps=60 snapshots.every=5 train.eval_every=20 logger=csv data.n_train_stories=1000"
    proc = subprocess.run(["make", "demo", f"ARGS={args}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = list((tmp_path / "out" / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert 0 < summary["pca"]["rownorm"]["pc1_pct"] <= 100
    assert (run / "analysis" / "report.md").exists() and list((run / "analysis").glob("*.png"))
    assert (run / "DONE").exists() and (run / "csv").exists()
    assert "backbone_lab run: done" in proc.stdout
