"""What the console tells a user: the progress line, the final table, and no warning on the
default path (W&B settings, probe gap notes, checkpoint loads)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO
from process_batch import start_side_by_side


def _wandb_logger_in_a_fresh_process(item: pytest.Item, tmp_path) -> subprocess.CompletedProcess:
    # a fresh process, as a user's: wandb keeps its first session's output streams for the whole
    # process, so in-process runs of earlier tests would hide what it prints
    code = ("from backbone_lab.loggers import make_wandb_logger\n"
            "import sys, wandb\n"
            "logger = make_wandb_logger(save_dir=sys.argv[1], mode='offline', name='t')\n"
            "logger.experiment.log({'x': 1.0})\n"
            "wandb.finish()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", "WANDB_API_KEY", "WANDB_MODE")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(REPO))  # no ~/.netrc credentials; let wandb speak
    return subprocess.run([sys.executable, "-c", code, str(tmp_path / "w")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def _cli(tmp_path, *args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(REPO), BACKBONE_LAB_OUTPUT=str(tmp_path / "out"),
               BACKBONE_LAB_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "backbone_lab", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def processes(request, tmp_path_factory):
    """The processes of the selected tests below, started side by side (tests/process_batch.py)."""
    batch = start_side_by_side(request, tmp_path_factory, {
        "test_the_wandb_logger_starts_without_the_anonymous_setting_warning": _wandb_logger_in_a_fresh_process,
        "test_a_run_into_a_log_file_shows_steps_and_labelled_losses_in_plain_lines":
            lambda item, tmp: _cli(tmp, "debug=tiny", "callbacks=default", "logger=wandb", "run_name=p",
                                   "callbacks.progress.plain_every_s=0")})
    yield batch
    batch.close()


def test_the_wandb_logger_starts_without_the_anonymous_setting_warning(processes, request):
    proc = processes.result(request.node.name)  # _wandb_logger_in_a_fresh_process
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "offline" in proc.stderr  # wandb did print its lines here
    assert "anonymous" not in proc.stderr, proc.stderr


def test_the_final_table_prints_long_paths_in_full(capsys, tmp_path):
    from backbone_lab.summary_print import print_result

    deep = tmp_path / ("a_rather_long_folder_name_" * 4) / "runs" / "2026-12-04_16-11-30_123456"
    result = {"run_dir": str(deep), "status": "done", "final_val_loss": 2.6031, "steps_done": 1000,
              "report": str(deep / "analysis" / "report.md")}
    print_result(result)
    out = capsys.readouterr().out
    assert f"run_dir  {deep}\n" in out and f"report   {deep / 'analysis' / 'report.md'}\n" in out
    assert "…" not in out and "2.603" in out and "backbone_lab run: done" in out


@pytest.mark.slow
def test_a_run_into_a_log_file_shows_steps_and_labelled_losses_in_plain_lines(processes, request):
    """stdout is a pipe here, as for a log file: plain progress lines (step / max_steps, LM and
    probe loss, tokens/s), no epoch counter, no terminal control codes, and no warning on stderr
    from the default callbacks and logger (W&B offline)."""
    proc = processes.result(request.node.name)  # debug=tiny callbacks=default logger=wandb run_name=p plain_every_s=0
    assert proc.returncode == 0, proc.stderr[-3000:]
    progress = [ln for ln in proc.stdout.splitlines() if ln.startswith("step ")]
    assert progress and progress[-1].startswith("step 30/30 · lm "), proc.stdout
    assert all(" · probe " in ln and ln.endswith("tok/s") for ln in progress), progress
    assert "Epoch" not in proc.stdout and "\x1b" not in proc.stdout
    warned = [ln for ln in proc.stderr.splitlines() if "warning" in ln.lower()]
    # the one warning debug=tiny earns: at its seq_len 64 the OOD probe gaps overlap the ID ones
    assert all("p_ood is not OOD" in ln for ln in warned), warned


def test_tokens_per_second_and_mfu_from_the_tokens_of_a_window(monkeypatch):
    """Planted numbers: 2 ranks, 4 micro-batches of 8 x 128 tokens in 0.5 s on each rank, a model
    of 1e6 FLOPs per token on a device of 100 TFLOP/s peak."""
    from types import SimpleNamespace

    import torch

    from backbone_lab.callbacks import progress as progress_module
    from backbone_lab.callbacks.progress import StepProgress, format_rate, progress_fields

    bar = StepProgress(plain=True)
    clock = iter([10.0, 10.5])
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    trainer = SimpleNamespace(global_step=0, world_size=2, max_steps=100)
    bar._window_start = (progress_module.time.perf_counter(), 0)
    bar._flops_per_token, bar._peak = 1e6, 100.0
    for _ in range(4):
        bar._tokens += torch.zeros(8, 128).numel()
    trainer.global_step = 2
    bar._update_rate(trainer)
    assert bar._rate == pytest.approx(2 * 4 * 8 * 128 / 0.5)  # 16,384 tok/s over both ranks
    assert bar._mfu == pytest.approx((4 * 8 * 128 / 0.5) * 1e6 / 100e12)  # per device
    assert format_rate(bar._rate) == "16.4k tok/s" and format_rate(950.0) == "950 tok/s"
    line = progress_fields({"lm_loss": 2.6031, "probe_loss": 0.8449}, bar._rate, 0.3104)
    assert line == "lm 2.603 · probe 0.845 · 16.4k tok/s · MFU 31.0%"
    assert progress_fields({"lm_loss": 2.6, "probe_loss": None}, None, None) == "lm 2.600 · probe –"
