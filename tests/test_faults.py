"""Real faults (issue: survive the cluster): full disk, planted pickles, SIGTERM / SIGINT, a second
writer, the umask, stale temp files, the final-step checkpoint, bad inputs in one line.
Each test is one row of the fault matrix in docs/FAULTS.md."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from backbone_lab.checkpoint_io import checkpoint_step, resume_checkpoint
from backbone_lab.durable import DiskFullError, atomic_file, atomic_write
from backbone_lab.errors import ConfigError, RunDirError
from backbone_lab.metrics_csv import read_rows
from backbone_lab.run_dir import RunDir
from backbone_lab.run_markers import read_marker
from backbone_lab.trajectory.store import TrajectoryReader, TrajectoryWriter
from conftest import REPO, compose_config
from process_batch import start_side_by_side

SHORT = ["train.max_steps=30", "train.eval_every=10", "train.ckpt_every=10", "snapshots.every=5", "analyze=false"]


def _cfg(tmp: Path, name: str, extra=(), run_dir: Path | None = None):
    return compose_config(["debug=tiny", f"run_dir={run_dir or tmp / name}", f"paths.cache_dir={tmp / 'cache'}",
                           *SHORT, *extra])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 30-step run: what every fault below must end up reproducing."""
    from backbone_lab.train import train

    tmp = tmp_path_factory.mktemp("faults")
    train(_cfg(tmp, "reference"))
    return tmp, tmp / "reference"


def _same_snapshots(a: Path, b: Path) -> None:
    ra, rb = TrajectoryReader(a), TrajectoryReader(b)
    assert ra.steps == rb.steps
    for s in ra.steps:
        np.testing.assert_array_equal(ra.load(s), rb.load(s), err_msg=f"step {s}")


# ------------------------------------------------------------------------------------ full disk
def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True)


def test_enospc_mid_write_keeps_the_previous_file(tmp_path):
    """A real full disk (a 1 MiB tmpfs) while replacing a file: the old bytes survive, no temp is left."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1m"):
        pytest.skip("cannot mount a tmpfs here (not root); the patched-writer test below covers the path")
    try:
        target = disk / "last.ckpt"
        atomic_write(target, [b"good" * 1000])
        with pytest.raises(DiskFullError, match="disk full while writing last.ckpt"):
            with atomic_file(target, previous=disk / "prev.ckpt") as f:
                for _ in range(64):
                    f.write(b"x" * (64 << 10))  # 4 MiB into a 1 MiB disk
        assert target.read_bytes() == b"good" * 1000
        assert sorted(p.name for p in disk.iterdir()) == ["last.ckpt"]
    finally:
        _umount(disk)


def test_full_disk_during_a_checkpoint_then_rerun_finishes(reference, tmp_path, monkeypatch):
    """The second checkpoint hits ENOSPC mid-write: the run fails in one line, last.ckpt (step 10)
    still loads, and after space is freed `resume=auto` finishes with the uninterrupted snapshots."""
    from backbone_lab import checkpoint_io
    from backbone_lab.train import train

    root, ref = reference
    real_save = torch.save
    calls = {"n": 0}

    def save_then_fill_disk(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the step-20 checkpoint: half written, then the disk is full
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io.torch, "save", save_then_fill_disk)
    run = RunDir(tmp_path / "full")
    with pytest.raises(DiskFullError, match="disk full while writing last.ckpt"):
        train(_cfg(root, "x", run_dir=run.root))
    assert checkpoint_step(run.last_checkpoint) == 10  # the good checkpoint survived
    assert not run.previous_checkpoint.exists() and not list(run.checkpoints.glob(".*.tmp"))
    assert read_marker(run.root)[0] == "FAILED"
    monkeypatch.setattr(checkpoint_io.torch, "save", real_save)  # space freed
    assert train(_cfg(root, "x", ["resume=auto"], run_dir=run.root))["status"] == "done"
    _same_snapshots(ref, run.root)
    assert read_marker(run.root)[0] == "DONE"


def test_free_space_is_checked_before_a_snapshot(tmp_path, monkeypatch):
    from backbone_lab import durable

    w = TrajectoryWriter(tmp_path / "trajectory")
    w.append(0, {"w": np.zeros((256, 256), np.float32)})
    monkeypatch.setattr(durable.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(DiskFullError, match=r"MB free, the snapshot of step 5 needs 0\.3 MB"):
        w.append(5, {"w": np.ones((256, 256), np.float32)})
    assert TrajectoryReader(tmp_path).steps == [0]


# ------------------------------------------------------------------------------------ planted files
class _Payload:
    """Unpickling this runs a shell command (what a malicious last.ckpt would carry)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(run: Path, marker: Path) -> None:
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"model.tok_emb.weight": _Payload(marker)}, "global_step": 30},
               run / "checkpoints" / "last.ckpt")


def test_a_planted_pickle_in_init_from_runs_nothing(reference, tmp_path):
    from backbone_lab.train import train

    root, _ = reference
    source, marker = tmp_path / "evil", tmp_path / "PWNED"
    _plant(source, marker)
    with pytest.raises(ConfigError, match="does not load as a checkpoint"):
        train(_cfg(root, "x", [f"+init_from={source}"], run_dir=tmp_path / "victim"))
    assert not marker.exists()


def test_a_planted_pickle_as_last_ckpt_is_refused_on_resume(reference, tmp_path):
    from backbone_lab.train import train

    root, _ = reference
    run, marker = tmp_path / "run", tmp_path / "PWNED"
    train(_cfg(root, "x", ["train.max_steps=10"], run_dir=run))
    _plant(run, marker)
    (run / "DONE").unlink()  # an unfinished run: resume=auto must load its checkpoint (a DONE one is left alone)
    with pytest.raises(RunDirError, match="no checkpoint loads"):
        train(_cfg(root, "x", ["train.max_steps=10", "resume=auto"], run_dir=run))
    assert not marker.exists()


def test_a_truncated_last_ckpt_falls_back_to_prev(tmp_path, reference):
    _, ref = reference
    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    data = ref.joinpath("checkpoints", "last.ckpt").read_bytes()
    run.previous_checkpoint.write_bytes(data)
    run.last_checkpoint.write_bytes(data[: len(data) // 2])  # what a crash of the old copy-in left
    path, step = resume_checkpoint(run)
    assert path == run.previous_checkpoint and step == 30


# ------------------------------------------------------------------------------------ signals
def _cli(tmp: Path, *args) -> subprocess.Popen:
    import torch

    # the reference ran in this process: the subprocess computes with the same number of threads
    # (another intra-op split changes the last bits of the snapshots)
    env = {**os.environ, "BACKBONE_LAB_OUTPUT": str(tmp / "out"), "BACKBONE_LAB_CACHE": str(tmp / "cache"),
           "PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.Popen([sys.executable, "-m", "backbone_lab", "debug=tiny", *SHORT, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_then_resume(item: pytest.Item, tmp: Path, root: Path) -> SimpleNamespace:
    """The processes of the test below: the CLI trains with a 0.2 s pause per step and gets the
    test's signal once snapshot 5 is written; what it left is read; then `resume=auto` runs."""
    sig, code = item.callspec.params["sig"], item.callspec.params["code"]
    run = tmp / "out" / "runs" / "sig"
    proc = _cli(tmp, "run_name=sig", "train.max_steps=30", f"paths.cache_dir={root / 'cache'}",
                "+callbacks.slow._target_=crash_callback.SlowDown", "+callbacks.slow.seconds=0.2")
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "trajectory" / "snap_00000005.bin").exists():
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    seen = SimpleNamespace(run=run, returncode=proc.returncode, err=err)
    if proc.returncode != code:
        return seen
    seen.marker = read_marker(run)
    seen.step = checkpoint_step(run / "checkpoints" / "last.ckpt")
    seen.snapshot_steps = TrajectoryReader(run).steps
    again = _cli(tmp, "run_name=sig", "train.max_steps=30", "resume=auto", f"paths.cache_dir={root / 'cache'}")
    _, seen.again_err = again.communicate(timeout=300)
    seen.again_returncode = again.returncode
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_checkpoint_and_resume_finishes(reference, processes, request, sig, code):
    _, ref = reference
    seen = processes.result(request.node.name)  # _signal_then_resume
    run, err = seen.run, seen.err
    assert seen.returncode == code, err[-2000:]
    assert "interrupted:" in err and "resume=auto" in err
    # the exact command that continues this run (its folder's run_name, resume=auto)
    assert "continue with: python -m backbone_lab debug=tiny " in err and err.rstrip().endswith("run_name=sig resume=auto"), err
    state, payload = seen.marker
    step = seen.step
    assert state == "INTERRUPTED" and payload["step"] == step and 5 <= step < 30
    assert max(seen.snapshot_steps) <= step
    assert seen.again_returncode == 0, seen.again_err[-2000:]
    assert read_marker(run)[0] == "DONE"
    _same_snapshots(ref, run)
    # the train-loss running mean is checkpointed: the resumed rows equal the uninterrupted ones
    for a, b in zip(read_rows(ref / "eval_metrics.csv"), read_rows(run / "eval_metrics.csv")):
        assert a["step"] == b["step"] and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)


# ------------------------------------------------------------------------------------ the run folder
def test_a_second_writer_of_the_same_run_is_refused(reference, tmp_path):
    from backbone_lab.run_lock import run_lock
    from backbone_lab.train import train

    root, _ = reference
    run = RunDir(tmp_path / "run")
    with run_lock(run):
        with pytest.raises(RunDirError, match=rf"being written by another process \(pid {os.getpid()}\)"):
            train(_cfg(root, "x", run_dir=run.root))


def test_files_follow_the_umask_and_stale_temps_are_removed(reference, tmp_path):
    from backbone_lab.train import train

    root, _ = reference
    run = tmp_path / "run"
    (run / "trajectory").mkdir(parents=True)
    stale = run / "trajectory" / ".snap_00000005.bin.4242.deadbeef.tmp"
    stale.write_bytes(b"\0" * 100)
    old = os.umask(0o027)
    try:
        train(_cfg(root, "x", ["train.max_steps=10"], run_dir=run))
    finally:
        os.umask(old)
    assert not stale.exists()
    for f in (run / "trajectory" / "snap_00000005.bin", run / "checkpoints" / "last.ckpt", run / "config.yaml",
              run / "DONE", run / "codewords.json"):
        assert f.stat().st_mode & 0o777 == 0o640, f  # 0666 & ~027 (mkstemp would give 0600)


def test_last_ckpt_is_the_final_step_and_init_step_must_match_a_checkpoint(reference, tmp_path):
    from backbone_lab.train import train

    root, _ = reference
    src = tmp_path / "src"
    train(_cfg(root, "x", ["train.max_steps=23"], run_dir=src))
    assert checkpoint_step(src / "checkpoints" / "last.ckpt") == 23  # ckpt_every=10 alone would leave 20
    with pytest.raises(ConfigError, match=r"init_step=15: .* no full checkpoint of step 15 \(last.ckpt is step 23\)"):
        train(_cfg(root, "x", [f"+init_from={src}", "+init_step=15"], run_dir=tmp_path / "reheat"))
    result = train(_cfg(root, "x", [f"+init_from={src}", "+init_step=23", "train.max_steps=5"],
                        run_dir=tmp_path / "reheat2"))
    assert result["status"] == "done"


# ------------------------------------------------------------------------------------ bad input, one line
BAD_INPUTS = [
    (["optimizer.lr=fast"], "optimizer torch.optim.adamw.AdamW(lr='fast'"),
    (["optimizer.lr=nan"], "optimizer.lr=nan must be a finite number"),
    (["train.max_steps=-5"], "train.max_steps must be >= 1"),
    (["train.max_steps=0"], "train.max_steps must be >= 1"),
    (["data.micro_batch_size=0"], "data.micro_batch_size must be >= 1"),
    (["snapshots.every=0"], "snapshots.every must be >= 1"),
    (["model.seq_len=100000"], "model.seq_len=100000 with data.micro_batch_size="),
    (["run_name=../../x"], "must be a plain folder name"),
    (["model.d_modle=3"], "Key 'd_modle' not in 'ModelConfig'"),
    (["train.max_steps=abc"], "could not be converted to Integer"),
    (["model=medium"], "Could not find 'model/medium'"),
    (["analysis.rolling_windw=5"], "rolling_windw"),
    (["seed=abc"], "seed='abc' must be an integer"),
    (["run_name=" + "r" * 300], "run_name is 300 bytes long; a folder name has at most 255"),
    (["run_dir=/proc/nope"], "run_dir=/proc/nope: cannot create a folder in /proc"),
    (["resume=yes"], "resume='yes' must be 'never' or 'auto'"),
    (["optimizer.lr=inf"], "optimizer.lr=inf must be a finite number"),
    (["+foo=1"], "unknown config key 'foo'"),
    (["+optimzer.lr=0.1"], "unknown config key 'optimzer' (given as +optimzer=...); did you mean optimizer?"),
    (["trainer=ddp_cpu", "trainer.devices=64"], "trainer.devices=64 CPU ranks on a machine with"),
    (["experiment_name=../../x"], "experiment_name='../../x' must be a plain folder name"),
    (["-m", "experiment_name=ok,../../x", "seed=1,2"], "experiment_name='../../x' must be a plain folder name"),
    (["init_step=abc"], "init_step='abc' must be a step number"),
]


def _check_line(monkeypatch, capsys, tmp_path, *args) -> str:
    """The CLI's pre-Hydra check in-process: returns its one stderr line (exit status 2)."""
    from backbone_lab.__main__ import check_command_line

    monkeypatch.setenv("BACKBONE_LAB_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("BACKBONE_LAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as info:
        check_command_line(["backbone_lab", "debug=tiny", "logger=none", *args])
    assert info.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()  # no data prepared, no folder
    return lines[0]


@pytest.mark.parametrize("args,needle", BAD_INPUTS, ids=[a[0] for a, _ in BAD_INPUTS])
def test_bad_input_is_refused_in_one_line_before_any_work(monkeypatch, capsys, tmp_path, args, needle):
    assert needle in _check_line(monkeypatch, capsys, tmp_path, *args)


def _a_file(tmp: Path) -> Path:
    f = tmp / "a_file"
    f.write_text("not a folder\n")
    return f


def _source_folders(tmp: Path) -> Path:
    (tmp / "sources" / "empty_run").mkdir(parents=True)
    (tmp / "sources" / "source_run").mkdir()
    return tmp / "sources"


# bad inputs whose value names a path of the test's own (id, overrides(tmp_path), what the line says)
BAD_PATHS = [
    ("run_dir=<file>/x", lambda t: [f"run_dir={_a_file(t)}/x"], "a_file is a file, not a folder"),
    ("output_root=<file>", lambda t: [f"paths.output_root={_a_file(t)}"], "a_file is a file, not a folder"),
    ("init_from=<missing>", lambda t: [f"init_from={t / 'nowhere'}"], "no such folder"),
    ("init_from=<typo>", lambda t: [f"init_from={_source_folders(t) / 'source_rum'}"], "did you mean"),
    ("init_from=<empty folder>", lambda t: [f"init_from={_source_folders(t) / 'empty_run'}"],
     "no checkpoints/last.ckpt there"),
]


@pytest.mark.parametrize("make,needle", [(m, n) for _, m, n in BAD_PATHS], ids=[i for i, _, _ in BAD_PATHS])
def test_bad_paths_are_refused_in_one_line_before_any_work(monkeypatch, capsys, tmp_path, make, needle):
    assert needle in _check_line(monkeypatch, capsys, tmp_path, *make(tmp_path))


def test_an_init_step_the_source_does_not_have_is_refused_before_any_work(reference, monkeypatch, capsys, tmp_path):
    _, ref = reference
    line = _check_line(monkeypatch, capsys, tmp_path, f"init_from={ref}", "init_step=99999")
    assert "init_step=99999: run" in line and "no full checkpoint of step 99999 (last.ckpt is step 30)" in line


@pytest.mark.parametrize("name,content,needle", [
    ("stories.txt", b"", "is empty"),
    ("stories.txt", b"\x00\x01\x02binary", "is a binary file"),
    ("stories.txt", "Ein Märchen.\n\nNoch eins.".encode("latin-1"), "is not UTF-8"),
    ("stories.json", b'{"text": "a story", oops', "is not valid JSON (line 1, column 21"),
    ("stories.txt", b"word " * (51 * 2**20 // 5), "has a line of 53.5 MB"),
    ("fifo", None, "is a FIFO (named pipe), not a regular file"),
], ids=["empty", "binary", "latin-1", "invalid-json", "51MB-line", "fifo"])
def test_bad_local_data_files_are_named(monkeypatch, capsys, tmp_path, name, content, needle):
    bad = tmp_path / name
    if content is None:
        os.mkfifo(bad)  # opening it would block until a writer came: must be refused unopened
    else:
        bad.write_bytes(content)
    line = _check_line(monkeypatch, capsys, tmp_path, "data=local", f"data.options.train_files=[{bad}]")
    assert str(bad) in line and needle in line


def test_valid_json_and_json_lines_data_files_pass_the_check(tmp_path):
    from backbone_lab.input_checks import check_text_file

    (tmp_path / "doc.json").write_text(json.dumps([{"text": "Once upon a time."}] * 3))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps({"text": f"story {i}"}) for i in range(3)))
    check_text_file(tmp_path / "doc.json", "data.options.train_files[0]")
    check_text_file(tmp_path / "lines.json", "data.options.train_files[1]")


@pytest.mark.parametrize("content,needle", [
    (bytes(range(256)) * 8, "is a binary file, not YAML text"),
    (b'claims:\n  - !!python/object/apply:os.system ["touch pwned"]\n',
     "not valid YAML (could not determine a constructor for the tag"),
    (None, "is a FIFO (named pipe)"),
], ids=["binary", "python-tag", "fifo"])
def test_bad_claim_files_are_refused_in_one_line(tmp_path, capsys, content, needle):
    from backbone_lab.compare.__main__ import main
    from test_compare import BASE, make_run

    make_run(tmp_path / "sweep" / "a", BASE)
    claims = tmp_path / "claims.yaml"
    if content is None:
        os.mkfifo(claims)
    else:
        claims.write_bytes(content)
    assert main([str(tmp_path / "sweep"), "--no-plots", "--claims", str(claims)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and needle in err[0] and str(claims) in err[0], err
    assert not (tmp_path / "sweep" / "compare").exists() and not (tmp_path / "pwned").exists()


def test_a_failed_start_that_never_trained_does_not_poison_the_run_name(reference, tmp_path):
    """A start that fails after its folder is made but before training (here: JSON stories without the
    `text` field, found by the loader) leaves FAILED; the corrected command in the same folder trains."""
    from backbone_lab.data.errors import DataError
    from backbone_lab.train import train

    root, _ = reference
    run = tmp_path / "run"
    data = tmp_path / "stories.json"
    data.write_text("\n".join(json.dumps({"body": f"Story number {i} is long enough to be kept."}) for i in range(40)))
    with pytest.raises(DataError, match="no 'text' field"):
        train(_cfg(root, "x", ["data=local", f"data.options.train_files=[{data}]", "data.options.val_files=[]"], run_dir=run))
    assert read_marker(run)[0] == "FAILED"
    result = train(_cfg(root, "x", ["train.max_steps=10"], run_dir=run))
    assert result["status"] == "done" and read_marker(run)[0] == "DONE"


def _cli_to_the_end(tmp: Path, *args, timeout: int = 300) -> tuple[Path, int, str]:
    """`_cli` run to its end: (its folder, its exit status, its stderr)."""
    proc = _cli(tmp, *args)
    _, err = proc.communicate(timeout=timeout)
    return tmp, proc.returncode, err


NEW_BAD_INPUTS = BAD_INPUTS[12:]  # the list (the first 12 rows ran through the CLI before)


def _bad_input_cli(item: pytest.Item, tmp: Path, root: Path) -> tuple[Path, int, str]:
    args = item.callspec.params["args"]
    return _cli_to_the_end(tmp, "logger=none", *(args(tmp) if callable(args) else args))


def test_the_cli_itself_exits_2_with_one_line_and_creates_nothing(processes, request):
    tmp_path, returncode, err = processes.result(request.node.name)  # logger=none optimizer.lr=fast
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert returncode == 2 and len(lines) == 1 and "lr='fast'" in lines[0], err[-2000:]
    assert "Traceback" not in err and not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_a_sweep_with_failed_jobs_exits_nonzero(processes, request):
    tmp_path, returncode, err = processes.result(request.node.name)  # -m model.n_head=4,3 (3 does not divide)
    assert returncode == 1, err[-2000:]
    assert "1 sweep job(s) failed" in err
    summary = json.loads(next((tmp_path / "out" / "failing").glob("*/sweep_summary.json")).read_text())
    assert sorted(r["state"] for r in summary) == ["done", "failed"]


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", NEW_BAD_INPUTS + [(m, n) for _, m, n in BAD_PATHS],
                         ids=[a[-1][:30] for a, _ in NEW_BAD_INPUTS] + [i for i, _, _ in BAD_PATHS])
def test_each_bad_input_through_the_cli_is_one_line_and_leaves_nothing(processes, request, args, needle):
    """The same inputs through `python -m backbone_lab` (one real process each, side by side):
    exit 2, one line, no traceback, no folder."""
    tmp_path, returncode, err = processes.result(request.node.name)  # _bad_input_cli
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert returncode == 2 and len(lines) == 1 and needle in lines[0], err[-2000:]
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_a_fifo_as_claim_file_through_the_cli_does_not_hang(tmp_path):
    from test_compare import BASE, make_run

    make_run(tmp_path / "sweep" / "a", BASE)
    os.mkfifo(tmp_path / "claims.yaml")
    proc = subprocess.run([sys.executable, "-m", "backbone_lab.compare", str(tmp_path / "sweep"), "--claims",
                           str(tmp_path / "claims.yaml")], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "is a FIFO" in lines[0], proc.stderr[-2000:]


def _sigterm_during_the_analysis(item: pytest.Item, tmp: Path, root: Path) -> SimpleNamespace:
    """The processes of the test below: the CLI trains, a planted diagnostic hook holds its analysis
    busy, SIGTERM comes while the hook runs; what it left is read; then `resume=auto` runs."""
    env = {**os.environ, "BACKBONE_LAB_OUTPUT": str(tmp / "out"), "BACKBONE_LAB_CACHE": str(root / "cache"),
           "PYTHONPATH": str(REPO / "tests")}
    args = [sys.executable, "-m", "backbone_lab", "debug=tiny", "logger=none", "run_name=ana", "train.max_steps=30",
            "train.eval_every=10", "train.ckpt_every=10", "snapshots.every=5", f"paths.cache_dir={root / 'cache'}",
            "analysis.diagnostics=[slow_analysis_hook:slow_the_first_time]"]
    run = tmp / "out" / "runs" / "ana"
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "hook_started").exists() and proc.poll() is None:
        time.sleep(0.1)
    seen = SimpleNamespace(run=run, hook_started=(run / "hook_started").exists())
    if not seen.hook_started:
        seen.err = proc.communicate()[1]
        return seen
    proc.send_signal(signal.SIGTERM)
    _, seen.err = proc.communicate(timeout=60)  # the hook would sleep 300 s: only a stopped analysis ends in time
    seen.returncode = proc.returncode
    if proc.returncode != 143:
        return seen
    seen.marker = read_marker(run)
    seen.summary_after_the_signal = (run / "analysis" / "summary.json").exists()
    seen.again = subprocess.run(args + ["resume=auto"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return seen


@pytest.mark.slow
def test_sigterm_during_the_analysis_stops_it_and_resume_finishes(processes, request):
    """A real SIGTERM while the end-of-run analysis runs (held busy by a planted diagnostic hook):
    the analysis stops at the signal, INTERRUPTED says so, exit 143; resume=auto finishes it, DONE."""
    seen = processes.result(request.node.name)  # _sigterm_during_the_analysis
    run = seen.run
    assert seen.hook_started, seen.err[-2000:]
    err = seen.err
    assert seen.returncode == 143, err[-2000:]
    assert "during the end-of-run analysis" in err and "resume=auto" in err
    state, payload = seen.marker
    assert state == "INTERRUPTED" and payload["during"] == "analysis" and payload["step"] == 30
    assert not seen.summary_after_the_signal
    assert seen.again.returncode == 0, seen.again.stderr[-2000:]
    state, payload = read_marker(run)
    assert state == "DONE" and payload["steps_done"] == 30
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert summary["diagnostics"]["slow_analysis_hook:slow_the_first_time"] == {"slept": False}


# ------------------------------------------------------------------------------------ hung ranks
def _launched_ranks(parent: int) -> list[int]:
    """pids of the ranks `parent` launched (`python -m backbone_lab.distributed`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"backbone_lab.worker" in cmd:
            pids.append(int(entry.name))
    return pids


def _stop_rank_1(item: pytest.Item, tmp: Path, root: Path) -> SimpleNamespace:
    """The processes of the test below: a 2-rank CLI run with a 0.2 s pause per step and a 20 s
    collective timeout; rank 1 gets SIGSTOP once its snapshot 5 is written."""
    proc = _cli(tmp, "logger=none", "trainer=ddp_cpu", "trainer.collective_timeout_s=20", "run_name=hung",
                f"paths.cache_dir={root / 'cache'}", "+callbacks.slow._target_=crash_callback.SlowDown",
                "+callbacks.slow.seconds=0.2")
    run = tmp / "out" / "runs" / "hung"
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "trajectory" / "snap_00000005.rank1.bin").exists() and proc.poll() is None:
        time.sleep(0.1)
    seen = SimpleNamespace(run=run, ranks=_launched_ranks(proc.pid))
    if len(seen.ranks) != 1:
        seen.err = proc.communicate()[1]
        return seen
    os.kill(seen.ranks[0], signal.SIGSTOP)
    try:
        _, seen.err = proc.communicate(timeout=20 + 60 + 60)  # the timeout, the watchdog's grace, slack
    finally:
        try:
            os.kill(seen.ranks[0], signal.SIGKILL)
        except ProcessLookupError:
            pass
    seen.returncode = proc.returncode
    return seen


@pytest.mark.slow
def test_a_stopped_rank_ends_the_run_with_failed_naming_it(processes, request):
    """SIGSTOP of rank 1 mid-run with trainer.collective_timeout_s=20: the run ends (exit 1) with
    FAILED and one line naming rank 1, instead of hanging for the library's default timeout."""
    seen = processes.result(request.node.name)  # _stop_rank_1
    assert len(seen.ranks) == 1, seen.err[-2000:]
    err = seen.err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert seen.returncode == 1 and "Traceback" not in err, err[-3000:]
    assert len(lines) == 1 and "rank 1" in lines[0] and "silent" in lines[0] and "rank1.log" in lines[0], lines
    state, payload = read_marker(seen.run)
    assert state == "FAILED" and payload["error"].startswith("RankFailure: rank 1") and "silent" in payload["error"]


# ------------------------------------------------------------------------------------ side by side
# the tests above whose processes run side by side: test -> what runs them (its test item, its own
# folder, the reference's folder), in the order they start (the longest waits first)
PROCESS_TESTS = {
    "test_a_stopped_rank_ends_the_run_with_failed_naming_it": _stop_rank_1,
    "test_a_signal_saves_a_checkpoint_and_resume_finishes": _signal_then_resume,
    "test_sigterm_during_the_analysis_stops_it_and_resume_finishes": _sigterm_during_the_analysis,
    "test_a_sweep_with_failed_jobs_exits_nonzero":
        lambda item, tmp, root: _cli_to_the_end(tmp, "logger=none", "-m", "model.n_head=4,3", "train.max_steps=2",
                                                "experiment_name=failing"),
    "test_the_cli_itself_exits_2_with_one_line_and_creates_nothing":
        lambda item, tmp, root: _cli_to_the_end(tmp, "logger=none", "optimizer.lr=fast"),
    "test_each_bad_input_through_the_cli_is_one_line_and_leaves_nothing": _bad_input_cli,
}


@pytest.fixture(scope="module")
def processes(request, reference, tmp_path_factory):
    """The processes of the selected tests in PROCESS_TESTS, started side by side when the first of
    them runs (tests/process_batch.py), each in a folder of its own; a test reads what its own
    left with `processes.result(request.node.name)` and asserts on it."""
    root, _ = reference
    batch = start_side_by_side(request, tmp_path_factory, PROCESS_TESTS, root)
    yield batch
    batch.close()
