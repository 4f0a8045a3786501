"""What the console tells a user: the progress line, the final table, and no warning on the
default path (W&B settings, probe gap notes, checkpoint loads)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO


def test_the_wandb_logger_starts_without_the_anonymous_setting_warning(tmp_path, monkeypatch, capfd):
    from backbone_lab.loggers import make_wandb_logger

    monkeypatch.delenv("WANDB_SILENT", raising=False)  # let wandb speak, as it does for a user
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logger = make_wandb_logger(save_dir=str(tmp_path), mode="offline", name="t")
    try:
        logger.experiment.log({"x": 1.0})
    finally:
        import wandb

        wandb.finish()
    err = capfd.readouterr().err
    assert "offline" in err  # wandb did print its lines here
    assert "anonymous" not in err, err
