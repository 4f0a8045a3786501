"""LightningModule: the composite loss, its λ schedule, the lr schedule and parameter groups.

Thin glue around `backbone_lab.model` and `backbone_lab.objective` (PAPER_MAP §3):
* micro-batch loss L = L_LM + λ(t) L_probe; Lightning divides it by the accumulation factor (and
  DDP averages over ranks), so the step gradient is the plain average of the micro-batch
  composite losses (PAPER_MAP §3.1) — whatever the split between ranks and accumulation;
* λ(t) and lr(t) are functions of the optimizer step t = global_step + 1 (1-based);
* parameter groups by shape, not by name (nanoGPT; `optim.parameter_groups_by_kind`): matrices
  decay, vectors (norm weights and biases) do not; the trunk matrices the model declares form
  their own group so an optimizer may treat them differently (Muon);
* gradient clipping and accumulation are the Trainer's, applied after accumulation.

The training step makes no host sync (`tests/test_gpu_path.py` counts them): the loss sums for
the `train_loss` metric and the divergence check live on the device and are read every
`train.log_every` steps (and before every evaluation), the same step on every rank; host numbers
(λ, lr) are logged as CPU tensors, and the progress line gets the last micro-batch's losses at
those reads (`progress_numbers`). Lightning
itself reads the logged device tensors only when it writes the loggers (`log_every_n_steps` =
`train.log_every`). Half-precision logits go through the chunked cross-entropy
(`backbone_lab.cross_entropy`), and Adam / AdamW on a GPU use torch's fused kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import lightning as L
import torch

from backbone_lab.distributed import all_gather_rows
from backbone_lab.model import GPT, ModelConfig
from backbone_lab.optim import parameter_groups_by_kind, use_training_weights
from backbone_lab.objective import LossParts, ObjectiveConfig, ScheduleConfig, composite_loss, lambda_at, lr_at
from backbone_lab.loop_config import LoopConfig


class DivergenceError(RuntimeError):
    """Raised inside training when the loss is non-finite or above the configured bound."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"training diverged at step {step}: loss = {loss}")
        self.step, self.loss = step, loss


class BackboneLitModule(L.LightningModule):
    """Trains a `GPT` with the composite objective.

    Args:
        model: the model's `ModelConfig` (vocab_size filled in).
        optimizer: a partial `torch.optim.Optimizer` factory (Hydra `_partial_: true`), called with
            the parameter groups of `parameter_groups`; its `lr` is the peak learning rate.
        schedule, objective, loop: the `schedule`, `objective` and `train` groups' configs.
    """

    def __init__(self, model: ModelConfig, optimizer: Callable[..., torch.optim.Optimizer],
                 schedule: ScheduleConfig, objective: ObjectiveConfig, loop: LoopConfig):
        super().__init__()
        self.model = GPT(model)
        # torch.compile'd forward + loss, kept out of the module tree so parameter names stay canonical
        self.__dict__["_compiled_loss"] = torch.compile(self._loss_parts) if loop.compile else None
        self.optimizer_factory = optimizer
        self.schedule, self.objective, self.loop = schedule, objective, loop
        self.total_steps = int(schedule.total or loop.max_steps)
        self.peak_lr = float(_factory_kwargs(optimizer).get("lr", 1e-3))
        # Per-rank device state (plain attributes, not buffers: DDP would broadcast rank 0's):
        # running sums since the last evaluation [composite loss, L_LM, count], and the
        # first divergence seen since the last sync [flag, step, loss].
        self._train_loss_sums = torch.zeros(3, dtype=torch.float64)
        self._divergence = torch.zeros(3, dtype=torch.float64)

    # -- schedules -----------------------------------------------------------------------
    def current_lambda(self, step: int | None = None) -> float:
        """λ at optimizer step `step` (default: the step being taken now, global_step + 1)."""
        return lambda_at(self.global_step + 1 if step is None else step, self.objective.lambda_schedule)

    def lr_at_step(self, step: int) -> float:
        """Learning rate used by optimizer step `step` (1-based)."""
        return self.peak_lr * self.lr_multiplier(step - 1)

    def lr_multiplier(self, scheduler_step: int) -> float:
        # LambdaLR calls this with 0 before the first optimizer step -> lr at step 1.
        return lr_at(scheduler_step + 1, 1.0, self.schedule.warmup, self.total_steps, self.schedule.floor)

    # -- FSDP ------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Under `trainer=fsdp` (ModelParallelStrategy): shard every block, then the root (FSDP2)."""
        mesh = getattr(self, "device_mesh", None) if self._trainer is not None else None
        if mesh is None or any(hasattr(p, "to_local") for p in self.model.parameters()):
            return
        from torch.distributed.fsdp import fully_shard

        dp_mesh = mesh["data_parallel"]
        for block in self.model.blocks:
            fully_shard(block, mesh=dp_mesh)
        fully_shard(self.model, mesh=dp_mesh)

    # -- loss ------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

    def _loss_parts(self, input_ids, targets, probe_mask, lam: float) -> tuple[torch.Tensor, ...]:
        parts = composite_loss(self.model(input_ids), targets, probe_mask, lam)
        return parts.loss, parts.lm, parts.probe, parts.n_lm, parts.n_probe

    def loss_parts(self, batch: dict, lam: float) -> LossParts:
        fn = self._compiled_loss or self._loss_parts
        return LossParts(*fn(batch["input_ids"], batch["targets"], batch["probe_mask"], lam))

    def on_train_start(self) -> None:
        use_training_weights(self.trainer.optimizers[0])  # schedule-free: gradients are taken at y
        self._last_sync_step = self.global_step  # the next sync comes after an optimizer step
        self._train_loss_sums = self._train_loss_sums.to(self.device)
        self._divergence = self._divergence.to(self.device)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        lam = self.current_lambda()
        parts = self.loss_parts(batch, lam)
        loss = parts.loss.detach()
        self._watch(loss, parts.lm.detach())
        self._last_parts = (loss, parts.lm.detach(), parts.probe.detach(), parts.n_probe.detach())  # read at a sync
        # Host numbers are logged as CPU tensors: `self.log` of a Python float creates a tensor on
        # the module's device, a blocking host-to-device copy on a GPU. Nothing here is logged to
        # the progress bar: Lightning reads every progress-bar value with `.item()` after every
        # micro-batch (`_ResultCollection.metrics`), so the loss goes there at each sync instead.
        self.log_dict(
            {
                "train/loss": loss,
                "train/lm_loss": parts.lm.detach(),
                "train/probe_loss": parts.probe.detach(),
                "train/lambda": torch.tensor(lam),
                "train/lr": torch.tensor(self.optimizers().param_groups[0]["lr"]),
            },
            on_step=True,
            prog_bar=False,
            batch_size=batch["input_ids"].shape[0],
        )
        return parts.loss

    def _watch(self, loss: torch.Tensor, lm: torch.Tensor) -> None:
        """Device-side bookkeeping of one micro-batch: running sums [composite, L_LM, count] and
        the first divergence."""
        loss64 = loss.double()
        self._train_loss_sums = self._train_loss_sums + torch.stack([loss64, lm.double(), torch.ones_like(loss64)])
        bad = ~torch.isfinite(loss64)
        if self.loop.divergence_loss is not None:
            bad = bad | (loss64 > self.loop.divergence_loss)
        first = bad & (self._divergence[0] == 0)
        seen = torch.stack([torch.ones_like(loss64), torch.full_like(loss64, self.global_step + 1), loss64])
        self._divergence = torch.where(first, seen, self._divergence)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step = self.global_step
        if step != getattr(self, "_last_sync_step", -1) and (step % self.loop.log_every == 0 or step >= self.loop.max_steps):
            self.raise_if_diverged()

    progress_numbers: dict | None = None
    """{"step", "loss", "lm_loss", "probe_loss"} of the last micro-batch at the last sync (for the
    progress line, `backbone_lab.callbacks.progress`); set only when a progress bar is on."""

    def raise_if_diverged(self) -> None:
        """Host sync point (the same step on every rank): raise `DivergenceError` if any rank saw a
        non-finite or too large loss since the last check. With a progress bar, also read the last
        micro-batch's losses for it (`progress_numbers`), in one more read at this sync."""
        self._last_sync_step = self.global_step
        seen = all_gather_rows(self._divergence).tolist()
        flagged = [r for r in seen if r[0]]
        if flagged:
            _, step, loss = min(flagged, key=lambda r: r[1])
            raise DivergenceError(int(step), loss)
        if self._trainer is not None and self.trainer.progress_bar_callback is not None and hasattr(self, "_last_parts"):
            self.progress_numbers = last_micro_batch_losses(self._last_parts, self.global_step)

    def take_train_loss_sums(self) -> torch.Tensor:
        """[sum of micro-batch composite losses, of their L_LM, count] on this rank since the last
        call (then reset)."""
        sums = self._train_loss_sums
        self._train_loss_sums = torch.zeros_like(sums)
        return sums

    # -- checkpoint: the train-loss running mean survives a resume ---------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        total = self._train_loss_sums.clone()
        if self.trainer.world_size > 1:  # every rank dumps; rank 0 writes the global sums
            torch.distributed.all_reduce(total)
        checkpoint["train_loss_sums"] = total.cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        sums = checkpoint.get("train_loss_sums")
        if sums is not None and sums.shape == self._train_loss_sums.shape and (
                self._trainer is None or self.trainer.global_rank == 0):
            self._train_loss_sums = sums.to(dtype=torch.float64)

    # -- optimizer ---------------------------------------------------------------------------
    def configure_optimizers(self):
        """The optimizer over the parameter groups and the per-step lr schedule. Adam / AdamW on
        a CUDA device get torch's fused kernel (one launch per step) unless the config chose an
        implementation (`fused_adam_applies`)."""
        factory = self.optimizer_factory
        sharded = any(hasattr(p, "to_local") for p in self.model.parameters())
        if fused_adam_applies(factory, self.device, sharded):
            factory = partial(factory, fused=True)
        optimizer = factory(parameter_groups_by_kind(self.model))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_multiplier)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }


def last_micro_batch_losses(parts: tuple[torch.Tensor, ...], step: int) -> dict:
    """The composite, LM and probe losses of a micro-batch (and its number of probe tokens) as
    Python numbers, in one device read (made at a sync point, where the device has caught up
    already); `probe_loss` is None when the micro-batch had no probe token."""
    loss, lm, probe, n_probe = torch.stack([p.float() for p in parts]).tolist()
    return {"step": int(step), "loss": loss, "lm_loss": lm, "probe_loss": probe if n_probe > 0 else None,
            "n_probe": int(n_probe)}


def _factory_kwargs(factory) -> dict:
    return dict(factory.keywords) if isinstance(factory, partial) else {}


FUSABLE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)
IMPLEMENTATION_KEYS = ("fused", "foreach", "differentiable", "capturable")


def fused_adam_applies(factory, device: torch.device | str, sharded: bool = False) -> bool:
    """Whether to build the optimizer with `fused=True`: the factory is a partial of
    `torch.optim.Adam` / `AdamW` that names no implementation (`fused`, `foreach`,
    `differentiable`, `capturable`), and the parameters live on a CUDA device, unsharded (FSDP2
    DTensor parameters keep torch's default). Always False on the CPU, whose runs stay
    bit-identical."""
    if torch.device(device).type != "cuda" or sharded or not isinstance(factory, partial):
        return False
    return factory.func in FUSABLE_OPTIMIZERS and not any(k in factory.keywords for k in IMPLEMENTATION_KEYS)

