"""Every checkpoint a real run reads is read as data (`torch.load(weights_only=True)`): across a
real tiny resume (what a resumed sweep job does too) and an `init_from` start, no load unpickles,
and no save leaves Lightning to log "`weights_only` was not set, defaulting to `False`"."""

from __future__ import annotations

import logging

import pytest
import torch

from backbone_lab.train import train
from conftest import TINY_OVERRIDES, compose_config


def _cfg(tmp_path, name, extra=()):
    return compose_config(TINY_OVERRIDES + [f"run_dir={tmp_path / name}", f"paths.cache_dir={tmp_path / 'cache'}",
                                            "train.max_steps=20", *extra])


class LoadRecorder:
    """Wraps `torch.load`: each call's `weights_only` and the file it read."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[object, str]] = []
        original = torch.load

        def recording_load(f, *args, **kwargs):
            self.calls.append((kwargs.get("weights_only"), str(f)))
            return original(f, *args, **kwargs)

        monkeypatch.setattr(torch, "load", recording_load)

    def take(self) -> list[tuple[object, str]]:
        calls, self.calls = self.calls, []
        return calls


def test_resume_and_init_from_read_every_checkpoint_as_data_only(tmp_path, monkeypatch, caplog):
    loads = LoadRecorder(monkeypatch)
    caplog.set_level(logging.INFO)
    crash = ["+callbacks.crash._target_=crash_callback.CrashAtStep", "+callbacks.crash.step=13"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_cfg(tmp_path, "run", crash))
    loads.take()

    assert train(_cfg(tmp_path, "run", ["resume=auto"]))["steps_done"] == 20
    resumed = loads.take()
    assert any(path.endswith("checkpoints/last.ckpt") for _, path in resumed), resumed  # the real resume happened
    assert [w for w, _ in resumed] == [True] * len(resumed), resumed

    # 25 steps: the final checkpoint is written after fit (not on the ckpt_every cadence)
    assert train(_cfg(tmp_path, "warm", [f"+init_from={tmp_path / 'run'}", "train.max_steps=25"]))["steps_done"] == 25
    warm = loads.take()
    assert any("/run/checkpoints/" in path for _, path in warm), warm
    assert [w for w, _ in warm] == [True] * len(warm), warm
    # Lightning's `save_checkpoint(weights_only=None)` logs "`weights_only` was not set, defaulting
    # to `False`" (there it means: save the full training state); every save says which it wants
    assert "weights_only" not in caplog.text
