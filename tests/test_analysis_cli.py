"""CLI end to end on a tiny written trajectory: summary.json + PNGs + report.md; error handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backbone_lab.analysis.cli import main, parse_config
from backbone_lab.trajectory.store import TrajectoryWriter

REPO = Path(__file__).resolve().parents[1]


def tiny_run(root: Path, n_blocks=2, steps=None, with_metrics=True, seed=0):
    rng = np.random.default_rng(seed)
    layout = []
    for b in range(n_blocks):
        for n, s in (("attn.qkv.weight", (24, 8)), ("attn.out_proj.weight", (8, 8)), ("mlp.w_up.weight", (32, 8)), ("mlp.w_down.weight", (8, 32))):
            layout.append((f"blocks.{b}.{n}", s))
    D = sum(int(np.prod(s)) for _, s in layout)
    steps = steps or [0, 1] + list(range(200, 6001, 200))
    v = rng.standard_normal(D)
    v /= np.linalg.norm(v)
    th0 = rng.standard_normal(D) * 0.02
    r = np.zeros(D)
    w = TrajectoryWriter(root / "trajectory", meta={"preset": "tiny"})
    for s in steps:
        r += rng.standard_normal(D) * 0.02
        th = th0 + (s / 1000) ** 1.5 * v + r
        off, d = 0, {}
        for n, sh in layout:
            k = int(np.prod(sh))
            d[n] = th[off:off + k].reshape(sh).astype(np.float32)
            off += k
        w.append(s, d)
    if with_metrics:
        with open(root / "eval_metrics.csv", "w") as f:
            f.write("step,train_loss,val_loss,p_in,p_ood,nll_in,nll_ood,lm_ood,r_ood,lambda,lr\n")
            for s in [1] + [x for x in steps if x >= 200]:
                p = 0.5 + 0.3 * np.sin(s / 500)
                f.write(f"{s},1.0,2.0,0.5,{p:.4f},1,1,1,1,2.0,0.001\n")
            f.write("200,1.0,2.0,0.5,0.9,1,1,1,1,2.0,0.001\n")  # resumed re-evaluation: last row wins
    return root


def test_cli_end_to_end(tmp_path, capsys):
    run = tiny_run(tmp_path / "run")
    rc = main([str(run), "anchor_step=1", "corr_bootstrap=50", "rolling_window=5"])
    assert rc == 0, capsys.readouterr().err
    out = run / "analysis"
    s = json.loads((out / "summary.json").read_text())
    for f in ("spectrum.png", "decomposition.png", "loglog.png", "rotation.png", "update_alignment.png", "report.md",
              "timeseries.csv", "spectrum.csv", "rolling.csv", "update_alignment.csv", "grams.npz"):
        assert (out / f).stat().st_size > 0, f
    assert s["anchor_step"] == 1 and s["cadence"] == 200 and s["steps"][:3] == [1, 200, 400]
    assert s["config"]["corr_bootstrap"] == 50
    assert s["pca"]["rownorm"]["n_rows"] == 30 and s["pca"]["raw"]["pc1_pct"] > 50
    assert s["decomposition"]["a_final"] > 0 and s["decomposition"]["sign_convention"] == "a(final) > 0"
    assert set(s["per_block"]["blocks"]) == {"block0", "block1"}
    assert s["correlations"]["by_window"]["full"]["n"] == 30
    assert "switching" in s and s["trajectory"]["crc_verified"]
    ts = (out / "timeseries.csv").read_text().splitlines()
    assert ts[0].startswith("step,a_t,norm_r_t") and ts[2].split(",")[0] == "200"
    assert ts[2].split(",")[7] == "0.9"  # de-duplicated eval row, last kept
    assert "![spectrum](spectrum.png)" in (out / "report.md").read_text()


def test_trajectory_folder_only(tmp_path):
    run = tiny_run(tmp_path / "r2", with_metrics=False, steps=list(range(0, 130, 10)))
    rc = main([str(run / "trajectory"), "figures=false", "rolling_window=4", "corr_bootstrap=0"])
    assert rc == 0
    s = json.loads((run / "analysis" / "summary.json").read_text())
    assert s["anchor_step"] == 0 and s["cadence"] == 10 and "correlations" not in s
    assert s["phases"]["boundary_step"] in s["steps"]


def test_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "does not exist" in err
    run = tiny_run(tmp_path / "run", steps=[0, 1, 200, 400, 600])
    assert main([str(run), "no_such_key=3"]) == 2
    assert "unknown analysis key" in capsys.readouterr().err
    assert main([str(run), "rolling_window=abc"]) == 2
    assert capsys.readouterr().err.startswith("error: bad override")
    assert main([str(run), "normalisation=centered"]) == 2
    assert "normalisation must be" in capsys.readouterr().err
    os.remove(run / "trajectory" / "snap_00000400.bin")
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "snap_00000400.bin" in err and "exclude_steps=[400]" in err and err.count("\n") == 1
    assert main([str(run), "exclude_steps=[400]", "figures=false", "cadence=0"]) == 0


def test_parse_config_types():
    cfg = parse_config(["anchor_step=1", "fit_windows=[[0,2000],[2000,4000]]", "device=cpu"])
    assert cfg.anchor_step == 1 and cfg.fit_windows == [[0, 2000], [2000, 4000]]
    with pytest.raises(ValueError):
        parse_config(["fit_windows=[[5,1]]"])


def test_module_entry_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "backbone_lab.analyze", str(tmp_path / "nope")], cwd=REPO,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.startswith("error:")
    assert "lightning" not in subprocess.run(
        [sys.executable, "-c", "import sys, backbone_lab.analysis.run_analysis, backbone_lab.analysis.cli; print(sorted(m for m in sys.modules if 'lightning' in m))"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.replace("[]", "")


def test_diagnostics_hook(tmp_path):
    from backbone_lab.analysis.config import AnalysisConfig
    from backbone_lab.analysis.run_analysis import register_diagnostic, run_analysis

    @register_diagnostic("probe_gram")
    def probe(ctx):
        return {"T": len(ctx["steps"]), "has_trunk": "trunk" in ctx["grams"], "coeffs": len(ctx["backbone_coeffs"])}

    run = tiny_run(tmp_path / "run", with_metrics=False, steps=list(range(0, 130, 10)))
    s = run_analysis(run, AnalysisConfig(figures=False, report=False, rolling_window=4, diagnostics=["probe_gram"]))
    assert s["diagnostics"]["probe_gram"] == {"T": 13, "has_trunk": True, "coeffs": 13}
    with pytest.raises(ValueError, match="unknown diagnostic"):
        run_analysis(run, AnalysisConfig(figures=False, report=False, rolling_window=4, diagnostics=["nope"]))
    s = run_analysis(run, AnalysisConfig(figures=False, report=False, rolling_window=4, save_backbone=True))
    vb = np.load(s["backbone_file"])
    assert vb.shape == (s["dim"],) and abs(np.linalg.norm(vb) - 1) < 1e-5


def test_reheating_through_cli(tmp_path):
    src = tiny_run(tmp_path / "src", with_metrics=False, steps=[0, 1] + list(range(200, 2001, 200)))
    from backbone_lab.trajectory.store import TrajectoryReader

    r = TrajectoryReader(src)
    last = r.load_named(2000)
    w = TrajectoryWriter(tmp_path / "reheat" / "trajectory")
    rng = np.random.default_rng(9)
    for k, s in enumerate([0, 100, 200, 300, 400]):
        w.append(s, {n: v + 0.01 * k * rng.standard_normal(v.shape).astype(np.float32) for n, v in last.items()})
    rc = main([str(tmp_path / "reheat"), f"source_run={src}", "figures=false", "rolling_window=3", "cadence=0"])
    assert rc == 0
    s = json.loads((tmp_path / "reheat" / "analysis" / "summary.json").read_text())
    rh = s["reheating"]
    assert rh["steps"] == [0, 100, 200, 300, 400] and rh["source_anchor_step"] == 0
    assert rh["a"][0] == pytest.approx(rh["source_a_final"], rel=1e-6)
    assert "Reheating projection" in (tmp_path / "reheat" / "analysis" / "report.md").read_text()


def test_an_earlier_analysis_is_kept_unless_overwrite_is_given(tmp_path, capsys):
    run = tiny_run(tmp_path / "run", with_metrics=False, steps=list(range(0, 130, 10)))
    assert main([str(run), "figures=false", "rolling_window=4"]) == 0
    summary = run / "analysis" / "summary.json"
    first = summary.read_text()
    capsys.readouterr()
    assert main([str(run), "anchor_step=10", "figures=false", "rolling_window=4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds an analysis" in err and "--overwrite" in err and "out_dir=" in err
    assert summary.read_text() == first  # untouched
    assert main([str(run), "anchor_step=10", "figures=false", "rolling_window=4", f"out_dir={tmp_path / 'a10'}"]) == 0
    assert json.loads((tmp_path / "a10" / "summary.json").read_text())["anchor_step"] == 10
    assert main([str(run), "--overwrite", "anchor_step=10", "figures=false", "rolling_window=4"]) == 0
    assert json.loads(summary.read_text())["anchor_step"] == 10


def test_a_mistyped_analysis_key_gets_the_nearest_name(tmp_path, capsys):
    run = tiny_run(tmp_path / "run", steps=[0, 1, 200, 400, 600])
    assert main([str(run), "anchr_step=1"]) == 2
    assert "did you mean anchor_step?" in capsys.readouterr().err
