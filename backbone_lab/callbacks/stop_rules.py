"""Explicit stopping rules (PAPER_MAP §4.1 C′ early stop, W15; divergence by drift blow-up).

Both are ordinary Lightning callbacks, declared in the experiment that uses them (never hidden
in the training loop):

* `EarlyStopRule`: at one step, stop the run when its evaluation metrics meet every given
  condition — e.g. the reference's C′ rule "stop at step 2,000 if val loss > 5.1 and best
  p_ood < 0.02". The decision is written to `<run_dir>/early_stop.json`.
* `DriftGuard`: every `every` steps, ‖θ_trunk(t) − θ_trunk(0)‖; non-finite or above `max_drift`
  raises `DriftDivergenceError` (a `DivergenceError`), which `train()` turns into a clean
  "diverged" run whose snapshots are still analysed.
"""

from __future__ import annotations

import logging
import math

import lightning as L
import torch

from backbone_lab.callbacks.evaluation import EvaluationCallback
from backbone_lab.distributed import all_reduce_sum
from backbone_lab.durable import atomic_write_json
from backbone_lab.lit_module import DivergenceError
from backbone_lab.run_dir import RunDir
from backbone_lab.trunk import named_subset

log = logging.getLogger("backbone_lab")


class EarlyStopRule(L.Callback):
    """Stop at `at_step` when every given condition holds on the run's evaluations so far.

    Args:
        at_step: the optimizer step at which the rule is checked (must be an evaluation step;
            the evaluation callback runs first).
        val_loss_above: condition "latest val loss > value" (None = not checked).
        best_p_ood_below: condition "best p_ood so far < value" (None = not checked).
        only_for: apply only when `optimizer` (pass `${optimizer._target_}`) is one of these
            targets — lets one rule ride along a sweep over optimizers (PAPER_MAP §4.1: C′ only).
        optimizer: the run's optimizer target (for `only_for`).
    """

    def __init__(self, at_step: int, val_loss_above: float | None = None, best_p_ood_below: float | None = None,
                 only_for: list[str] | None = None, optimizer: str | None = None):
        self.at_step = int(at_step)
        self.val_loss_above, self.best_p_ood_below = val_loss_above, best_p_ood_below
        self.active = not only_for or optimizer in set(only_for)
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.active or step == self._last_step or step != self.at_step:
            self._last_step = step
            return
        self._last_step = step
        evaluation = next(c for c in trainer.callbacks if isinstance(c, EvaluationCallback))
        decision = self.decide(evaluation.history)  # every rank holds the same rows: same decision
        decision["step"] = step
        if trainer.global_rank == 0:
            atomic_write_json(RunDir(evaluation.csv_path.parent).early_stop, decision, indent=2)
        if decision["stop"]:
            log.warning("early-stop rule met at step %d (%s): stopping", step, decision["reason"])
            trainer.should_stop = True

    def decide(self, rows: list[dict]) -> dict:
        """The rule on the evaluation rows so far (dicts as in eval_metrics.csv)."""
        if not rows:
            return {"stop": False, "reason": "no evaluation yet"}
        val = rows[-1]["val_loss"]
        finite = [r["p_ood"] for r in rows if math.isfinite(r["p_ood"])]
        best = max(finite) if finite else math.nan
        checks = []
        if self.val_loss_above is not None:
            checks.append((val > self.val_loss_above, f"val_loss {val:.4g} > {self.val_loss_above}"))
        if self.best_p_ood_below is not None:
            checks.append((best < self.best_p_ood_below, f"best p_ood {best:.4g} < {self.best_p_ood_below}"))
        stop = bool(checks) and all(ok for ok, _ in checks)
        return {"stop": stop, "reason": " and ".join(f"{text}: {'yes' if ok else 'no'}" for ok, text in checks),
                "val_loss": val, "best_p_ood": best,
                "conditions": {"val_loss_above": self.val_loss_above, "best_p_ood_below": self.best_p_ood_below}}


class DriftDivergenceError(DivergenceError):
    """The trunk drift blew up (or became non-finite)."""

    def __init__(self, step: int, drift: float, limit: float | None):
        RuntimeError.__init__(self, f"training diverged at step {step}: trunk drift ||theta(t) - theta(0)|| = "
                                    f"{drift:.4g} (limit {limit})")
        self.step, self.loss, self.drift = step, drift, drift


class DriftGuard(L.Callback):
    """Raise `DriftDivergenceError` when ‖θ_trunk(t) − θ_trunk(start)‖ is non-finite or > `max_drift`.

    Args:
        max_drift: the limit (None = only non-finite drift stops the run). The paper's β2 = 0 run
            reaches 1.6e5 against ~120 for β2 = 0.95; a limit of ~1e3-1e4 catches such blow-ups.
        every: check every this many optimizer steps (one trunk subtraction: cheap).

    The reference point is the trunk at the start of `fit` (the initialisation; for a resumed
    run, the resumed weights).
    """

    def __init__(self, max_drift: float | None = None, every: int = 10):
        self.max_drift = None if max_drift is None else float(max_drift)
        self.every = max(1, int(every))
        self._ref: torch.Tensor | None = None
        self.last_drift = math.nan

    @staticmethod
    def _local_trunk(pl_module) -> list[torch.Tensor]:
        # this rank's values: whole tensors (replicated) or the FSDP2 shard it owns
        return [p.detach().to_local() if hasattr(p, "to_local") else p.detach()
                for p in named_subset(pl_module.model).values()]

    def on_train_start(self, trainer, pl_module) -> None:
        self._ref = [t.clone() for t in self._local_trunk(pl_module)]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self._ref is None or step == 0 or step % self.every:
            return
        with torch.no_grad():
            sq = sum(((t.double() - r.double()) ** 2).sum() for t, r in zip(self._local_trunk(pl_module), self._ref))
            if any(hasattr(p, "to_local") for p in pl_module.model.parameters()):
                all_reduce_sum(sq)  # sharded: the squared norm is a sum over shards
            drift = float(sq.sqrt())
        self.last_drift = drift
        if not math.isfinite(drift) or (self.max_drift is not None and drift > self.max_drift):
            raise DriftDivergenceError(step, drift, self.max_drift)
