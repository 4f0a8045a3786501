"""The training progress line: optimizer step / max_steps, the LM loss and the probe loss (each
labelled), tokens/s and, on a GPU, MFU.

    step 120/1000 ━━━━━━━━━━━━━━━━━ 0:00:05 < 0:00:38 · lm 3.214 · probe 0.845 · 24.1k tok/s

On a terminal it is a rich bar redrawn in place; when stdout is not a terminal (a log file, a
scheduler's output) it prints plain lines — one per `plain_every_s` seconds at most, plus the
first and the last step — so a log holds no control characters.

The numbers come from the module's host syncs (`BackboneLitModule` reads the losses of the last
micro-batch every `train.log_every` steps, together with its divergence check): the line never
makes the training step wait for the device. Tokens/s counts the tokens of every micro-batch on
every rank over the wall time between two syncs (the device has caught up at each). MFU =
tokens/s per device × (6·N + 12·L·T·d) / the device's dense bf16 peak (`backbone_lab.mfu`),
shown when the peak of the GPU is known.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

# what the module reads at each sync (`BackboneLitModule.progress_numbers`), and its label on the line
SHOWN = (("lm_loss", "lm"), ("probe_loss", "probe"))


def format_rate(tokens_per_s: float) -> str:
    """24100.0 -> '24.1k tok/s'."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if tokens_per_s >= scale:
            return f"{tokens_per_s / scale:.1f}{suffix} tok/s"
    return f"{tokens_per_s:.0f} tok/s"


def progress_fields(metrics: dict[str, Any], tokens_per_s: float | None, mfu: float | None) -> str:
    """'lm 3.214 · probe 0.845 · 24.1k tok/s · MFU 31.0%' from the module's `progress_numbers`
    (missing ones left out)."""
    # a micro-batch without probe tokens has no probe loss: "probe –", not a perfect-looking 0.000
    parts = [f"{label} {'–' if metrics[key] is None else format(float(metrics[key]), '.3f')}"
             for key, label in SHOWN if key in metrics]
    if tokens_per_s is not None:
        parts.append(format_rate(tokens_per_s))
    if mfu is not None:
        parts.append(f"MFU {100 * mfu:.1f}%")
    return " · ".join(parts)


class StepProgress(ProgressBar):
    """Progress by optimizer step (not epochs: a run is `train.max_steps` long), see the module
    docstring. `plain`: None = plain lines exactly when stdout is not a terminal."""

    def __init__(self, refresh_rate: int = 1, plain: bool | None = None, plain_every_s: float = 10.0):
        super().__init__()
        self.refresh_rate = max(1, int(refresh_rate))
        self.plain = plain
        self.plain_every_s = float(plain_every_s)
        self._enabled = True
        self._bar = None
        self._task = None
        self._tokens = 0            # tokens of this rank since the last rate window began
        self._window_start = None   # (time, optimizer step) of that moment
        self._rate: float | None = None
        self._mfu: float | None = None
        self._flops_per_token: float | None = None
        self._peak: float | None = None
        self._last_plain = -float("inf")
        self._last_plain_step = -1
        self._numbers: dict | None = None  # the module's progress_numbers last shown

    # -- ProgressBar interface ----------------------------------------------------------------
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    # -- hooks --------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled:
            return
        if self.plain is None:
            self.plain = not sys.stdout.isatty()
        self._setup_mfu(trainer, pl_module)
        self._window_start = (time.perf_counter(), trainer.global_step)
        if not self.plain:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                                 TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(),
                                 TextColumn("{task.fields[numbers]}"))
            self._task = self._bar.add_task("train", total=trainer.max_steps, completed=trainer.global_step,
                                            numbers="")
            self._bar.start()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not self._enabled:
            return
        ids = batch.get("input_ids") if isinstance(batch, dict) else None
        if ids is not None:
            self._tokens += int(ids.numel())  # shape only: no device read
        self._show(trainer, pl_module, final=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled:
            self._show(trainer, pl_module, final=True)
        self._stop()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stop()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop()

    # -- helpers ------------------------------------------------------------------------------
    def _show(self, trainer: L.Trainer, pl_module: L.LightningModule, final: bool) -> None:
        """Take the module's numbers of its last sync (Lightning runs this hook before the module's,
        so they arrive one micro-batch later, or at the end), then redraw the bar or print a line."""
        numbers = getattr(pl_module, "progress_numbers", None)
        fresh = numbers is not None and numbers is not self._numbers
        if fresh:
            self._numbers = numbers
            self._update_rate(trainer)
        step = self._numbers["step"] if self._numbers else trainer.global_step
        if self.plain:
            now = time.perf_counter()
            due = fresh and now - self._last_plain >= self.plain_every_s
            if (due or final) and step != self._last_plain_step:
                self._last_plain, self._last_plain_step = now, step
                fields = self.fields()
                print(f"step {step}/{trainer.max_steps}" + (f" · {fields}" if fields else ""), flush=True)
        elif self._bar is not None and (fresh or final or trainer.global_step % self.refresh_rate == 0):
            self._bar.update(self._task, completed=trainer.global_step, numbers=self.fields())

    def fields(self) -> str:
        return progress_fields(self._numbers or {}, self._rate, self._mfu)

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.console.print(*args, **kwargs)
        else:
            print(*args, **kwargs)

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _update_rate(self, trainer: L.Trainer) -> None:
        t0, step0 = self._window_start
        now, step = time.perf_counter(), trainer.global_step
        if now > t0 and step > step0:
            per_rank = self._tokens / (now - t0)
            self._rate = per_rank * trainer.world_size
            if self._flops_per_token and self._peak:
                from backbone_lab.mfu import mfu

                self._mfu = mfu(per_rank, self._flops_per_token, self._peak)
        self._tokens, self._window_start = 0, (now, step)

    def _setup_mfu(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """FLOPs per token and the device's peak, on a CUDA device whose peak is known."""
        device = pl_module.device
        if device.type != "cuda":
            return
        import torch

        from backbone_lab.mfu import model_flops_per_token, peak_tflops

        self._peak = peak_tflops(torch.cuda.get_device_name(device))
        cfg = getattr(getattr(pl_module, "model", None), "cfg", None)
        if self._peak is None or cfg is None:
            return
        n_params = sum(p.numel() for p in pl_module.parameters())  # a tied tensor counts once
        self._flops_per_token = model_flops_per_token(n_params, cfg.n_layer, cfg.seq_len, cfg.d_model)
