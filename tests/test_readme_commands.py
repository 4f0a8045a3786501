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
    args = "train.max_steps=60 snapshots.every=5 train.eval_every=20 logger=csv data.options.n_train_stories=1000"
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


def _readme_command(needle: str) -> list[str]:
    """The README's command line containing `needle`, split as the shell would (comment dropped)."""
    import shlex

    lines = [ln for ln in (REPO / "README.md").read_text().splitlines() if ln.startswith("python -m ") and needle in ln]
    assert len(lines) == 1, (needle, lines)
    return shlex.split(lines[0].split("#", 1)[0])


def test_the_readme_local_data_example_uses_a_file_the_clone_writes(tmp_path):
    """`data=local` as the README shows it: the corpus comes from `backbone_lab.data.write_corpus`,
    run from a bare folder (nothing beside the clone), then a tiny training run reads it."""
    import sys

    env = dict(os.environ, PYTHONPATH=str(REPO), BACKBONE_LAB_OUTPUT=str(tmp_path / "out"),
               BACKBONE_LAB_CACHE=str(tmp_path / "cache"))
    write = _readme_command("backbone_lab.data.write_corpus")
    train = _readme_command("data=local")
    proc = subprocess.run([sys.executable, *write[1:], "--stories", "600"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, *train[1:], "debug=tiny", "analyze=false"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import yaml

    run = next((tmp_path / "out" / "runs").iterdir())
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert data["source"] == "local" and data["options"]["train_files"] == ["stories.txt"], data
    assert (run / "DONE").exists() and (run / "tokenizer.json").exists()


def test_nothing_in_the_repository_reaches_outside_the_clone():
    """No tracked file names the team folder beside the clone: a user's clone has none."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout (git ls-files listed nothing)")
    needle = "../" + "shared"
    hits = [f for f in files if (REPO / f).is_file() and needle in (REPO / f).read_text(errors="ignore")]
    assert hits == []
