"""Evaluation at step 1 and every `every` steps (SPEC §2.7, §3.2).

One pass per fixed set: LM validation loss on fixed crops, and for each probe set (in-distribution
gaps, OOD gaps) exact-match accuracy, probe NLL and the LM loss of the non-answer tokens.
Results go to the loggers (`eval/...`) and to `<run_dir>/eval_metrics.csv`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning as L

from backbone_lab.data.evaluation import evaluate_lm, evaluate_probe
from backbone_lab.metrics_csv import append_row


def eval_steps(max_steps: int, every: int, extra: Sequence[int] = (1,)) -> set[int]:
    steps = set(range(every, max_steps + 1, every)) | {max_steps}
    return steps | {int(s) for s in extra if 0 < int(s) <= max_steps}


class EvaluationCallback(L.Callback):
    def __init__(self, steps: Sequence[int], csv_path):
        self.steps = set(int(s) for s in steps)
        self.csv_path = csv_path
        self._last_step = -1
        self.history: list[dict] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step != self._last_step and step in self.steps:
            self.evaluate(trainer, pl_module, step)
        self._last_step = step

    def evaluate(self, trainer, pl_module, step: int) -> dict:
        dm = trainer.datamodule
        model, device = pl_module.model, pl_module.device
        val_loss = evaluate_lm(model, dm.val_loader(), device)
        probe_in = evaluate_probe(model, dm.probe_eval_loader("in"), device)
        probe_ood = evaluate_probe(model, dm.probe_eval_loader("ood"), device)
        lm_ood = probe_ood["lm_nll"]
        row = {
            "step": step,
            "train_loss": pl_module.pop_mean_train_loss(),
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
        append_row(self.csv_path, row)
        self.history.append(row)
        metrics = {f"eval/{k}": float(v) for k, v in row.items() if k != "step"}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        return row
