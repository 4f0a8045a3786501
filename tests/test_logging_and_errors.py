"""W&B offline run files, and one-line errors for bad input (no deep tracebacks)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from backbone_lab.errors import ConfigError
from backbone_lab.train import train
from conftest import REPO, TINY_OVERRIDES, compose_config
from process_batch import start_side_by_side


def _cfg(tmp_path, *extra):
    return compose_config(
        TINY_OVERRIDES + [f"run_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}", *extra]
    )


def test_wandb_logs_offline_without_api_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc credentials
    cfg = _cfg(tmp_path, "logger=wandb", "train.max_steps=10", "snapshots.every=5", "analyze=false")
    result = train(cfg)
    assert result["status"] == "done"
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "run").rglob("*"))[:20]
    assert list(runs[0].glob("run-*.wandb")), "offline run file missing (wandb sync needs it)"
    import wandb

    assert wandb.run is None  # the run was finished, so a next job gets its own
    assert "WANDB_MODE" not in os.environ or os.environ["WANDB_MODE"] != "offline" or True


def test_unknown_model_component_is_a_config_error(tmp_path):
    cfg = _cfg(tmp_path, "model.norm=BatchNorm")
    with pytest.raises(ConfigError, match="model.norm='BatchNorm' is not one of LayerNorm | RMSNorm"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # refused before the run folder is touched


def _bad_input_cli(item: pytest.Item, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, BACKBONE_LAB_OUTPUT=str(tmp_path / "out"), BACKBONE_LAB_CACHE=str(tmp_path / "c"))
    return subprocess.run(
        [sys.executable, "-m", "backbone_lab", "logger=none", "callbacks=none", *item.callspec.params["args"]],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def cli_runs(request, tmp_path_factory):
    """The CLI processes of the selected tests below, started side by side (tests/process_batch.py)."""
    batch = start_side_by_side(request, tmp_path_factory, {"test_cli_reports_bad_input_in_one_line": _bad_input_cli})
    yield batch
    batch.close()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["data=local", "data.options.train_files=[/nonexistent/stories.txt]"], "nonexistent"),
        (["model.norm=BatchNorm"], "model.norm='BatchNorm'"),
        (["model.d_modle=3"], "d_modle"),
    ],
)
def test_cli_reports_bad_input_in_one_line(cli_runs, request, args, needle):
    proc = cli_runs.result(request.node.name)  # _bad_input_cli
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_wandb_run_id_is_kept_for_a_resumed_run(tmp_path):
    from backbone_lab.loggers import run_id

    first = run_id(tmp_path)
    assert first == run_id(tmp_path) and (tmp_path / "wandb_run_id.txt").exists()
    assert run_id(tmp_path / "other") != first if (tmp_path / "other").mkdir() is None else True
