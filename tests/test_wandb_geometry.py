"""W&B dashboards show the geometry: the analysis headline numbers in the run summary, the
analysis figures as images, and a sweep job's `swept` config with typed values of only the swept
keys — read back from the offline run file (`wandb/offline-run-*/run-*.wandb`) itself."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from backbone_lab import sweep
from backbone_lab.loggers import analysis_numbers, sweep_values
from conftest import TINY_OVERRIDES, compose_config


# ----------------------------------------------------------------------------- reading an offline run
def offline_records(path: Path):
    """Records of a W&B offline run file: a LevelDB-style log (7-byte header ':W&B' + magic +
    version, 32 KiB blocks, records of crc32 / length / type FULL=1 FIRST=2 MIDDLE=3 LAST=4),
    each payload one `wandb_internal_pb2.Record`."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            yield record


def _put(into: dict, item) -> None:
    """One summary / config / history item: a flat `key`, or a `nested_key` path into a dict."""
    path = [item.key] if item.key else list(item.nested_key)
    for part in path[:-1]:
        into = into.setdefault(part, {})
    into[path[-1]] = json.loads(item.value_json)


def offline_run(run_dir: Path, wait_s: float = 60.0) -> dict:
    """{summary, config, history} of the one offline W&B run under `run_dir` (as W&B will sync it).

    `wandb.finish()` can return before W&B's service process has written the file out (seen on a
    loaded machine): read again until the run's exit record is in it.
    """
    import time

    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    deadline = time.monotonic() + wait_s
    while not any(r.WhichOneof("record_type") == "exit" for r in offline_records(files[0])):
        assert time.monotonic() < deadline, f"{files[0]} has no exit record after {wait_s} s"
        time.sleep(0.5)
    summary: dict = {}
    config: dict = {}
    history: list[dict] = []
    for r in offline_records(files[0]):
        kind = r.WhichOneof("record_type")
        if kind == "summary":
            for item in r.summary.update:
                _put(summary, item)
        elif kind == "config":
            for item in r.config.update:
                _put(config, item)
        elif kind == "history":
            row: dict = {}
            for item in r.history.item:
                _put(row, item)
            history.append(row)
    return {"summary": summary, "config": config, "history": history}


# ----------------------------------------------------------------------------- swept values
def _sweep_dir(tmp_path: Path, task: list[str], params: dict) -> Path:
    d = tmp_path / "sweep"
    d.mkdir(parents=True)
    (d / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": task}, "sweeper": {"params": params}}}))
    return d


def test_swept_holds_only_the_swept_keys_typed(tmp_path):
    cfg = compose_config(["optimizer.betas=[0.9,0.8]", "optimizer.lr=3e-4", "objective.lambda_schedule=[[0,2.0],[400,4.0]]",
                          "data.p_probe=0.2", "seed=7"])
    d = _sweep_dir(tmp_path, ["+experiment=x", "optimizer.lr=1e-3,3e-4", "data.p_probe=0.2", "seed=range(5,8)"],
                   {"optimizer.betas": "[0.9,0.99],[0.9,0.8]", "objective.lambda_schedule": "[[0,2.0]],[[0,2.0],[400,4.0]]"})
    job = {"optimizer.lr": "3e-4", "data.p_probe": "0.2", "seed": "7", "optimizer.betas": "[0.9,0.8]",
           "objective.lambda_schedule": "[[0,2.0],[400,4.0]]"}
    values = sweep_values(cfg, d, job)
    assert values == {"optimizer.lr": 3e-4, "seed": 7, "optimizer.betas": [0.9, 0.8],
                      "objective.lambda_schedule": [[0, 2.0], [400, 4.0]]}  # data.p_probe is constant: not swept
    assert isinstance(values["optimizer.lr"], float) and isinstance(values["seed"], int)
    group = sweep_values(compose_config(["optimizer=sgd"]), _sweep_dir(tmp_path / "g", ["optimizer=adamw,sgd"], {}),
                         {"optimizer": "sgd"})
    assert group == {"optimizer": "sgd"}  # a config-group choice keeps its option name
    assert sweep_values(cfg, tmp_path / "no_record", {"seed": "7"}) == {"seed": 7}


def test_configure_wandb_puts_typed_swept_values_and_tags(tmp_path):
    cfg = compose_config(["logger=wandb", "optimizer.betas=[0.9,0.8]"])
    d = _sweep_dir(tmp_path, ["data.p_probe=0.2"], {"optimizer.betas": "[0.9,0.99],[0.9,0.8]"})
    ctx = {"job_dir": d / "1_b", "sweep_dir": d, "num": 1}
    sweep._configure_wandb(cfg, ctx, {"optimizer.betas": "[0.9,0.8]", "data.p_probe": "0.2"})
    node = OmegaConf.to_container(cfg.logger.wandb)
    assert node["config"]["swept"] == {"optimizer.betas": [0.9, 0.8]}
    assert "optimizer.betas=[0.9,0.8]" in node["tags"] and not any(t.startswith("data.p_probe") for t in node["tags"])


# ----------------------------------------------------------------------------- the run summary
def test_analysis_numbers_come_from_the_summary():
    from backbone_lab.analysis.summary import Summary

    s = Summary({"pca": {"rownorm": {"pc1_pct": 71.4, "k95": 9}, "raw": {"pc1_pct": 79.1, "k95": 3}},
                 "decomposition": {"norm_delta_final": 137.0, "backbone_frac_mean": 0.69},
                 "rolling": {"rho_mean": 0.8, "rho_min": 0.7},
                 "training_diagnostics": {"grad_mean_abs_cos": 0.01, "update_mean_abs_cos": 0.25, "update_over_grad": 25.0},
                 "flags": [{"code": "p_ood_at_chance"}]})
    n = analysis_numbers(s)
    assert n["analysis/pc1_rownorm_pct"] == 71.4 and n["analysis/k95_rownorm"] == 9 and n["analysis/drift"] == 137.0
    assert n["analysis/rho_min"] == 0.7 and n["analysis/update_over_grad"] == 25.0
    assert n["analysis/grad_abs_cos"] == 0.01 and n["analysis/flags"] == "p_ood_at_chance"
    assert "analysis/backbone_frac_final" not in n  # absent values are left out


def test_offline_wandb_run_shows_the_geometry(tmp_path, monkeypatch):
    """A tiny run with W&B offline and the alignment diagnostics, as a sweep job would configure it:
    the offline file holds the headline numbers, the figures and the typed swept values."""
    from backbone_lab.train import train

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = compose_config(TINY_OVERRIDES + [f"run_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
                                           "logger=wandb", "logger.wandb.mode=offline", "callbacks=alignment",
                                           "callbacks.grad_alignment.every_n_steps=10",
                                           "callbacks.update_alignment.delta=5", "callbacks.update_alignment.every_n_steps=10",
                                           "optimizer.betas=[0.9,0.8]", "analysis.rolling_window=4"])
    d = _sweep_dir(tmp_path, [], {"optimizer.betas": "[0.9,0.99],[0.9,0.8]"})
    sweep._configure_wandb(cfg, {"job_dir": tmp_path / "run", "sweep_dir": d, "num": 0}, {"optimizer.betas": "[0.9,0.8]"})
    assert train(cfg)["status"] == "done"
    wb = offline_run(tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "analysis" / "summary.json").read_text())
    s = wb["summary"]
    assert s["analysis/pc1_rownorm_pct"] == pytest.approx(summary["pca"]["rownorm"]["pc1_pct"])
    for key in ("pc1_raw_pct", "k95_rownorm", "k95_raw", "drift", "backbone_frac_mean", "rho_mean", "update_abs_cos",
                "grad_abs_cos", "update_over_grad", "noise_floor"):
        assert f"analysis/{key}" in s, key
    images = {k: v for row in wb["history"] for k, v in row.items() if k.startswith("analysis/figures/")}
    assert "analysis/figures/spectrum" in images and images["analysis/figures/spectrum"]["_type"] == "image-file"
    assert any((tmp_path / "run" / "wandb").glob("offline-run-*/files/media/images/analysis/figures/spectrum_*.png"))
    assert wb["config"]["swept"] == {"optimizer.betas": [0.9, 0.8]}  # typed, not a string
    assert wb["config"]["optimizer"]["betas"] == [0.9, 0.8]
