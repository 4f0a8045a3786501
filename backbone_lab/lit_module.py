"""LightningModule: the composite loss, its λ schedule, the lr schedule and parameter groups.

Thin glue around `backbone_lab.model` and `backbone_lab.objective` (SPEC §3):
* micro-batch loss L = L_LM + λ(t) L_probe; Lightning divides it by the accumulation factor, so
  the step gradient is the plain average of the micro-batch composite losses (SPEC §3.1);
* λ(t) and lr(t) are functions of the optimizer step t = global_step + 1 (1-based);
* decay group = every parameter whose name contains neither "ln" nor "bias" (embeddings incl.
  the tied head, and the four trunk matrices); LayerNorms get weight decay 0 (SPEC §3);
* gradient clipping and accumulation are the Trainer's (`gradient_clip_val`,
  `accumulate_grad_batches`), applied after accumulation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import lightning as L
import torch

from backbone_lab.model import GPT, GPTConfig
from backbone_lab.objective import LossParts, composite_loss, lambda_at, lr_at, validate_lambda_schedule


def decay_parameter_groups(model: torch.nn.Module) -> tuple[list, list]:
    """(decay, no_decay) parameter lists by the reference's name rule (SPEC §3)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if ("ln" in name or "bias" in name) else decay).append(p)
    return decay, no_decay


class DivergenceError(RuntimeError):
    """Raised inside training when the loss is non-finite or above the configured bound."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"training diverged at step {step}: loss = {loss}")
        self.step, self.loss = step, loss


class BackboneLitModule(L.LightningModule):
    """Trains a `GPT` with the composite objective.

    Args:
        model_cfg: the GPT shape.
        optimizer: a partial `torch.optim.Optimizer` factory (Hydra `_partial_: true`), called
            with the two parameter groups; its `lr` is the peak learning rate.
        lambda_schedule: [(start_step, λ), ...].
        warmup, total_steps, lr_floor: the warmup + cosine-with-floor schedule (SPEC §3).
        run_dir: where callbacks write their files.
        divergence_loss: stop (DivergenceError) when the loss exceeds it or is non-finite.
        compile: run the training forward through `torch.compile` (GPU speed-up).
    """

    def __init__(
        self,
        model_cfg: GPTConfig,
        optimizer: Callable[..., torch.optim.Optimizer],
        lambda_schedule: Sequence[Sequence[float]] = ((0, 2.0),),
        warmup: int = 100,
        total_steps: int = 1000,
        lr_floor: float = 0.1,
        run_dir: str | Path = ".",
        divergence_loss: float | None = None,
        compile: bool = False,
    ):
        super().__init__()
        self.model = GPT(model_cfg)
        # torch.compile'd forward, kept out of the module tree so parameter names stay canonical
        self.__dict__["_compiled_model"] = torch.compile(self.model) if compile else None
        self.optimizer_factory = optimizer
        self.lambda_schedule = validate_lambda_schedule(lambda_schedule)
        self.warmup, self.total_steps, self.lr_floor = int(warmup), int(total_steps), float(lr_floor)
        self.run_dir = Path(run_dir)
        self.divergence_loss = divergence_loss
        self.peak_lr = float(_factory_kwargs(optimizer).get("lr", 1e-3))
        # running sums for the "train_loss since the previous eval" metric (SPEC §3.1)
        self._loss_sum = 0.0
        self._loss_count = 0

    # -- schedules -----------------------------------------------------------------------
    def current_lambda(self, step: int | None = None) -> float:
        """λ at optimizer step `step` (default: the step being taken now, global_step + 1)."""
        return lambda_at(self.global_step + 1 if step is None else step, self.lambda_schedule)

    def lr_at_step(self, step: int) -> float:
        """Learning rate used by optimizer step `step` (1-based)."""
        return self.peak_lr * self.lr_multiplier(step - 1)

    def lr_multiplier(self, scheduler_step: int) -> float:
        # LambdaLR calls this with 0 before the first optimizer step -> lr at step 1.
        return lr_at(scheduler_step + 1, 1.0, self.warmup, self.total_steps, self.lr_floor)

    # -- loss ------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def loss_parts(self, batch: dict, lam: float) -> LossParts:
        logits = (self._compiled_model or self.model)(batch["input_ids"])
        return composite_loss(logits, batch["targets"], batch["probe_mask"], lam)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        lam = self.current_lambda()
        parts = self.loss_parts(batch, lam)
        loss_value = parts.loss.detach()
        self._check_divergence(loss_value)
        self._loss_sum += float(loss_value)
        self._loss_count += 1
        self.log_dict(
            {
                "train/loss": loss_value,
                "train/lm_loss": parts.lm.detach(),
                "train/probe_loss": parts.probe.detach(),
                "train/lambda": lam,
                "train/lr": self.optimizers().param_groups[0]["lr"],
            },
            on_step=True,
            prog_bar=False,
            batch_size=batch["input_ids"].shape[0],
        )
        self.log("loss", loss_value, prog_bar=True, on_step=True, logger=False)
        return parts.loss

    def _check_divergence(self, loss: torch.Tensor) -> None:
        value = float(loss)
        if not math.isfinite(value) or (
            self.divergence_loss is not None and value > self.divergence_loss
        ):
            raise DivergenceError(self.global_step + 1, value)

    def pop_mean_train_loss(self) -> float:
        """Mean composite micro-batch loss since the previous call (NaN if none)."""
        mean = self._loss_sum / self._loss_count if self._loss_count else float("nan")
        self._loss_sum, self._loss_count = 0.0, 0
        return mean

    # -- optimizer ---------------------------------------------------------------------------
    def configure_optimizers(self):
        decay, no_decay = decay_parameter_groups(self.model)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = self.optimizer_factory(groups)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_multiplier)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }


def _factory_kwargs(factory) -> dict:
    return dict(factory.keywords) if isinstance(factory, partial) else {}
