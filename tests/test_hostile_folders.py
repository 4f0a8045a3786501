"""Hostile run folders (issue: hung ranks, hostile run folders, malformed runs): symlinks planted
where outputs go, and malformed runs among good ones. Each test is one row of docs/FAULTS.md."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from test_compare import BASE, _merge, make_run


def _victim(tmp_path: Path, name: str = "victim.txt") -> Path:
    """A file outside every run folder that a planted link points at."""
    victim = tmp_path / "outside" / name
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("precious, not ours\n")
    return victim


# ------------------------------------------------------------------------------------ planted links
def test_a_file_link_in_analysis_is_replaced_not_followed(tmp_path, capsys):
    """analysis/loglog.png, report.md and summary.json shipped as symlinks to files outside the run:
    the analysis replaces the links with its own files and the targets keep their bytes."""
    from backbone_lab.analysis.cli import main

    run = make_run(tmp_path / "run", _merge(BASE))
    victims = {}
    for name in ("loglog.png", "report.md", "summary.json", "spectrum.png"):
        victims[name] = _victim(tmp_path, f"victim_{name}")
        link = run / "analysis" / name
        link.unlink(missing_ok=True)
        link.symlink_to(victims[name])
    assert main([str(run), "--overwrite", "anchor_step=1"]) == 0, capsys.readouterr().err
    for name, victim in victims.items():
        link = run / "analysis" / name
        assert not link.is_symlink() and link.stat().st_size > 0, name
        assert victim.read_text() == "precious, not ours\n", name
    assert json.loads((run / "analysis" / "summary.json").read_text())["format"]


def test_a_folder_link_as_analysis_is_refused_in_one_line(tmp_path, capsys):
    from backbone_lab.analysis.cli import main

    run = make_run(tmp_path / "run", _merge(BASE))
    elsewhere = tmp_path / "outside" / "folder"
    elsewhere.mkdir(parents=True)
    (run / "analysis" / "summary.json").unlink()
    for p in (run / "analysis").iterdir():
        p.unlink()
    (run / "analysis").rmdir()
    (run / "analysis").symlink_to(elsewhere, target_is_directory=True)
    assert main([str(run)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "is a symbolic link" in err[0] and "analysis" in err[0], err
    assert list(elsewhere.iterdir()) == []  # nothing landed in the link's target


def test_file_links_in_compare_are_replaced_and_a_folder_link_is_refused(tmp_path, capsys):
    from backbone_lab.compare.__main__ import main

    sweep = tmp_path / "sweep"
    make_run(sweep / "a", _merge(BASE, seed=1))
    make_run(sweep / "b", _merge(BASE, seed=2), seed=1)
    out = sweep / "compare"
    out.mkdir()
    victims = {}
    for name in ("claims.csv", "runs.csv", "report.md", "overlay.png"):
        victims[name] = _victim(tmp_path, f"victim_{name}")
        (out / name).symlink_to(victims[name])
    assert main([str(sweep)]) == 0, capsys.readouterr().err
    for name, victim in victims.items():
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0, name
        assert victim.read_text() == "precious, not ours\n", name
    capsys.readouterr()

    linked = tmp_path / "sweep2"
    make_run(linked / "a", _merge(BASE, seed=1))
    target = tmp_path / "outside" / "cmp"
    target.mkdir(parents=True)
    (linked / "compare").symlink_to(target, target_is_directory=True)
    assert main([str(linked)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "compare output folder is a symbolic link" in err[0], err
    assert list(target.iterdir()) == []


def test_a_linked_append_log_is_replaced_not_followed(tmp_path):
    """Appended files (diagnostics CSVs, rank logs) drop a planted link instead of writing through it."""
    from backbone_lab.analysis.diagnostic_records import RecordWriter

    victim = _victim(tmp_path)
    path = tmp_path / "run" / "diagnostics" / "alignment.csv"
    path.parent.mkdir(parents=True)
    path.symlink_to(victim)
    RecordWriter(path, ["step", "cos"]).append({"step": 1, "cos": 0.5})
    assert not path.is_symlink() and path.read_text().splitlines()[0] == "step,cos"
    assert victim.read_text() == "precious, not ours\n"


def test_linked_eval_metrics_and_lock_files_are_replaced_not_followed(tmp_path):
    """eval_metrics.csv (appended every evaluation) and .lock (truncated to hold the pid)."""
    from backbone_lab.metrics_csv import append_row, read_rows
    from backbone_lab.run_dir import RunDir
    from backbone_lab.run_lock import run_lock

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    victims = {name: _victim(tmp_path, f"victim_{name}") for name in ("eval_metrics.csv", ".lock")}
    run.eval_metrics.symlink_to(victims["eval_metrics.csv"])
    run.lock.symlink_to(victims[".lock"])
    append_row(run.eval_metrics, {"step": 1, "val_loss": 2.5})
    with run_lock(run):
        assert run.lock.read_text().strip() == str(os.getpid())
    assert not run.eval_metrics.is_symlink() and read_rows(run.eval_metrics)[0]["val_loss"] == 2.5
    assert not run.lock.is_symlink()
    for victim in victims.values():
        assert victim.read_text() == "precious, not ours\n"


# ------------------------------------------------------------------------------------ malformed runs
def _nan_everywhere(x):
    if isinstance(x, dict):
        return {k: _nan_everywhere(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_everywhere(v) for v in x]
    return float("nan") if isinstance(x, (int, float)) and not isinstance(x, bool) else x


def _all_nan(run: Path) -> None:
    path = run / "analysis" / "summary.json"
    path.write_text(json.dumps(_nan_everywhere(json.loads(path.read_text()))))  # json writes NaN literals


def _wrong_type(run: Path) -> None:
    path = run / "analysis" / "summary.json"
    data = json.loads(path.read_text())
    data["pca"]["rownorm"]["pc1_pct"] = "high"
    path.write_text(json.dumps(data))


def _not_an_object(run: Path) -> None:
    (run / "analysis" / "summary.json").write_text("[1, 2, 3]")


def _huge_csv_field(run: Path) -> None:
    with open(run / "eval_metrics.csv", "a") as f:
        f.write('44,"' + "x" * (20 << 20) + '",1\n')  # a 20 MB field


def _huge_analysis_csv_field(run: Path) -> None:
    with open(run / "analysis" / "timeseries.csv", "a") as f:
        f.write("1," + "9" * (20 << 20) + ",1\n")


MALFORMED = [
    (_all_nan, "summary.json holds NaN/inf at pca.rownorm.pc1_pct"),
    (_wrong_type, "summary.json: pca.rownorm.pc1_pct is 'high', not a number"),
    (_not_an_object, "summary.json holds a list, not an object"),
    (_huge_csv_field, "eval_metrics.csv: csv.Error: field larger than field limit"),
    (_huge_analysis_csv_field, "timeseries.csv: csv.Error: field larger than field limit"),
]


@pytest.mark.parametrize("damage,reason", MALFORMED, ids=[d.__name__.strip("_") for d, _ in MALFORMED])
def test_a_malformed_run_is_a_row_and_the_others_are_compared(tmp_path, capsys, damage, reason):
    """One malformed run among good ones: exit 1, a row `unreadable: <reason>`, the report for the rest."""
    from backbone_lab.compare.__main__ import main

    sweep = tmp_path / "sweep"
    make_run(sweep / "good1", _merge(BASE, seed=1))
    make_run(sweep / "good2", _merge(BASE, seed=2), seed=1)
    damage(make_run(sweep / "bad", _merge(BASE, seed=3), seed=2))
    assert main([str(sweep), "--no-plots"]) == 1
    err = capsys.readouterr().err
    assert f"{sweep / 'bad'}: unreadable: {reason}" in err and "Traceback" not in err, err
    with open(sweep / "compare" / "runs.csv", newline="") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert rows["seed=3"]["state"].startswith(f"unreadable: {reason}")
    for good in ("seed=1", "seed=2"):  # the good runs keep their numbers
        assert rows[good]["state"] == "done" and float(rows[good]["pc1_rownorm_pct"]) == 100.0
    report = (sweep / "compare" / "report.md").read_text()
    assert f"| seed=3 | unreadable: {reason}" in report
    assert "Claims of the paper" in report


# ------------------------------------------------------------------------------------ edited trajectories
def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _drop_rank1_index(traj: Path) -> None:
    (traj / "snapshots.rank1.json").unlink()


def _world_size_3(traj: Path) -> None:
    _edit_json(traj / "manifest.json", lambda m: m["slicing"].update(world_size=3))


def _world_size_1(traj: Path) -> None:
    _edit_json(traj / "manifest.json", lambda m: m["slicing"].update(world_size=1))


def _sliced_dtype(traj: Path) -> None:
    _edit_json(traj / "manifest.json", lambda m: m.update(dtype="float16"))


@pytest.mark.parametrize("edit,message", [
    (_drop_rank1_index, r"snapshots\.rank1\.json: rank 1's snapshot index is missing .* restore the file"),
    (_world_size_3, r"slicing\.world_size is 3 but slicing\.pieces lists 2 ranks: .* restore it to 2"),
    (_world_size_1, r"slicing\.world_size is 1 but the snapshots are listed per rank .* restore it to 2"),
    (_sliced_dtype, r"manifest's dtype is 'float16' but snapshots\.rank0\.json .* says 'float32'.* restore dtype='float32'"),
], ids=["deleted-rank1-index", "world_size-2-to-3", "world_size-2-to-1", "dtype"])
def test_an_edited_sliced_trajectory_names_the_file_and_the_fix(tmp_path, edit, message):
    """Not "no snapshot left after exclude_steps/max_step": the file, the field and the real fix."""
    from test_store_sliced import write_both

    from backbone_lab.trajectory.store import TrajectoryError, TrajectoryReader

    _, sliced = write_both(tmp_path, 2)
    edit(sliced / "trajectory")
    with pytest.raises(TrajectoryError, match=message):
        TrajectoryReader(sliced)


@pytest.mark.parametrize("field,value,message", [
    ("dtype", "bfloat16", r"manifest\.json: dtype is 'bfloat16' but the snapshot files hold \d+ bytes, what dtype "
                          r"'float32' gives: the manifest's dtype field was changed; restore dtype='float32'"),
    ("nbytes", 999, r"manifest\.json: the nbytes field of step 0 says 999, the layout \(tensors x float32\) gives "
                    r"(\d+) and the file holds \1: the field was changed; restore nbytes=\1"),
], ids=["dtype", "nbytes"])
def test_an_edited_manifest_says_which_field(tmp_path, field, value, message):
    from test_store_sliced import write_both

    from backbone_lab.trajectory.store import TrajectoryError, TrajectoryReader

    plain, _ = write_both(tmp_path, 2)
    if field == "dtype":
        _edit_json(plain / "trajectory" / "manifest.json", lambda m: m.update(dtype=value))
    else:
        _edit_json(plain / "trajectory" / "manifest.json", lambda m: m["snapshots"][0].update(nbytes=value))
    with pytest.raises(TrajectoryError, match=message):
        TrajectoryReader(plain)
