"""Fixtures: repo paths, composed configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

os.environ.setdefault("WANDB_SILENT", "true")
# One compute thread per test process, this one and every subprocess (they inherit it): set before
# torch is imported. The tests' models are tiny and CI has 2 cores shared by processes that often
# run side by side (ranks, a CLI under test, a batch of them); two OpenMP threads per process on a
# busy core make a tiny model ~10x slower (debug=tiny, 30 steps: 0.7-1.2 s with one thread, 9-16 s
# with two while one other process was busy). The distributed tests unset it where they check
# what Lightning does to the thread settings.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def compose_config(overrides: list[str] | None = None, config_name: str = "config"):
    """Compose the project config like the CLI does (no Hydra job, no run dir)."""
    from hydra import compose, initialize_config_dir

    from backbone_lab.config_schema import register_configs

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name=config_name, overrides=overrides or [])


@pytest.fixture
def tiny_cfg(tmp_path):
    """The embedded default shrunk to a few seconds of CPU work (conf/debug/tiny.yaml), writing into tmp_path."""
    return compose_config(TINY_OVERRIDES + [f"run_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}"])


TINY_OVERRIDES = ["debug=tiny"]
