"""The run folder as one contract: every path of a run, named once.

    <run>/
      config.yaml          resolved config of the run (rank 0 writes it)
      codewords.json       the probe's codewords (+ sha256)
      execution.json       how the run was executed (threads, torch, device, precision, determinism, world size)
      tokenizer.json       the tokenizer the run used (loadable with tokenizers.Tokenizer.from_file)
      eval_metrics.csv     one row per evaluation (backbone_lab.metrics_csv)
      trajectory/          trunk snapshots (backbone_lab.trajectory.store)
      checkpoints/         last.ckpt (+ prev.ckpt while a new one is written), step*.ckpt
      diagnostics/         in-training diagnostics CSVs
      analysis/            summary.json, report.md, figures, CSVs
      DONE | FAILED | INTERRUPTED   job state marker (backbone_lab.run_markers)
      REDIRECT.json        a sweep job whose results live in another folder (backbone_lab.sweep)
      .lock                held by the process writing the run (backbone_lab.run_lock)

Every module asks `RunDir` for a path instead of spelling file names. No torch import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder (nothing is created by constructing it)."""

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    def __fspath__(self) -> str:
        return str(self.root)

    # files written by training
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def codewords(self) -> Path:
        return self.root / "codewords.json"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def eval_metrics(self) -> Path:
        return self.root / "eval_metrics.csv"

    @property
    def trajectory(self) -> Path:
        return self.root / "trajectory"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def previous_checkpoint(self) -> Path:
        return self.checkpoints / "prev.ckpt"

    def step_checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step{int(step):06d}.ckpt"

    @property
    def diverged_checkpoint(self) -> Path:
        return self.checkpoints / "diverged.ckpt"

    @property
    def diagnostics(self) -> Path:
        return self.root / "diagnostics"

    @property
    def execution(self) -> Path:
        return self.root / "execution.json"

    @property
    def early_stop(self) -> Path:
        return self.root / "early_stop.json"

    @property
    def wandb_run_id(self) -> Path:
        return self.root / "wandb_run_id.txt"

    # analysis outputs
    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    @property
    def summary(self) -> Path:
        return self.analysis / "summary.json"

    @property
    def report(self) -> Path:
        return self.analysis / "report.md"

    # job state
    def marker(self, name: str) -> Path:
        return self.root / name

    @property
    def redirect(self) -> Path:
        return self.root / "REDIRECT.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"
