"""Evaluation at step 1 and every `every` steps (PAPER_MAP §2.7, §3.2).

One pass per fixed set: LM validation loss on fixed crops, and for each probe set (in-distribution
gaps, OOD gaps) exact-match accuracy, probe NLL and the LM loss of the non-answer tokens.

Evaluated once per step, whatever the number of ranks: each rank evaluates a contiguous 1/W of
every set, the sums (and the train-loss sums since the previous evaluation) are all-reduced in
one collective, so every rank holds the single-process numbers; rank 0 alone writes them to the
loggers (`eval/...`) and appends them to `<run_dir>/eval_metrics.csv`. A schedule-free optimizer
is evaluated at its evaluation weights (`optim.evaluation_weights`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch

from backbone_lab.data.evaluation import LM_SUMS, PROBE_SUMS, finish_lm, finish_probe, lm_sums, probe_sums
from backbone_lab.distributed import all_reduce_sum
from backbone_lab.metrics_csv import append_row, read_rows
from backbone_lab.optim import evaluation_weights


def eval_steps(max_steps: int, every: int, extra: Sequence[int] = (1,)) -> set[int]:
    steps = set(range(every, max_steps + 1, every)) | {max_steps}
    return steps | {int(s) for s in extra if 0 < int(s) <= max_steps}


class EvaluationCallback(L.Callback):
    """Evaluates at `steps`; `history` holds every row of the run (earlier rows read back on resume)."""

    def __init__(self, steps: Sequence[int], csv_path: str | Path):
        self.steps = set(int(s) for s in steps)
        self.csv_path = Path(csv_path)
        self._last_step = -1
        self.history: list[dict] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step
        self.history = [r for r in read_rows(self.csv_path) if r["step"] <= trainer.global_step] if self.csv_path.exists() else []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step != self._last_step and step in self.steps:
            pl_module.raise_if_diverged()
            self.evaluate(trainer, pl_module, step)
        self._last_step = step

    def evaluate(self, trainer, pl_module, step: int) -> dict:
        dm, device = trainer.datamodule, pl_module.device
        rank, world = trainer.global_rank, trainer.world_size
        model = pl_module.model  # replicated (DDP) or FSDP2-sharded in place: its forward unshards
        with evaluation_weights(trainer.optimizers[0] if trainer.optimizers else None):  # schedule-free: x
            sums = torch.cat([
                lm_sums(model, dm.val_loader(rank=rank, world_size=world), device),
                probe_sums(model, dm.probe_eval_loader("in", rank=rank, world_size=world), device),
                probe_sums(model, dm.probe_eval_loader("ood", rank=rank, world_size=world), device),
                pl_module.take_train_loss_sums().to(device),
            ])
        values = all_reduce_sum(sums).tolist()  # the one host sync of an evaluation
        n_lm, n_pr = len(LM_SUMS), len(PROBE_SUMS)
        val_loss = finish_lm(values[:n_lm])
        probe_in = finish_probe(values[n_lm:n_lm + n_pr])
        probe_ood = finish_probe(values[n_lm + n_pr:n_lm + 2 * n_pr])
        loss_sum, lm_sum, loss_count = values[-3:]
        lm_ood = probe_ood["lm_nll"]
        row = {
            "step": step,
            "train_loss": loss_sum / loss_count if loss_count else math.nan,
            "train_lm_loss": lm_sum / loss_count if loss_count else math.nan,
            "val_loss": val_loss,
            "p_in": probe_in["acc"],
            "p_ood": probe_ood["acc"],
            "nll_in": probe_in["nll"],
            "nll_ood": probe_ood["nll"],
            "lm_ood": lm_ood,
            "r_ood": probe_ood["nll"] / lm_ood if lm_ood and math.isfinite(lm_ood) else math.nan,
            "lambda": pl_module.current_lambda(step),
            "lr": pl_module.lr_at_step(step),
        }
        self.history.append(row)
        if trainer.global_rank == 0:
            append_row(self.csv_path, row)
            metrics = {f"eval/{k}": float(v) for k, v in row.items() if k != "step"}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        return row
