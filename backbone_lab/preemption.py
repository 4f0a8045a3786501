"""Preemption: SIGTERM (what SLURM and most schedulers send) and SIGINT (Ctrl-C) end a run
cleanly instead of losing up to `train.ckpt_every` steps.

`signals_handled()` installs a handler that only *records* the first signal. The
`PreemptionCallback` looks at that record at optimizer-step boundaries (never inside an
accumulation), agrees on it across ranks (one max all-reduce per optimizer step when W > 1,
the same step on every rank) and stops the Trainer there; `train()` then saves a resumable
checkpoint of that step, writes the INTERRUPTED marker and raises `Preempted`, which the CLI
turns into exit status 128 + signal (143 for SIGTERM, 130 for SIGINT). `resume=auto` or a
sweep rerun (or a SLURM requeue) continues exactly. A second Ctrl-C interrupts at once.

Lightning's own SIGTERM handling would raise at the start of the next micro-batch (possibly in
the middle of an accumulation) and save nothing; the callback puts our handler back on top of
Lightning's at `on_train_start`.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

import lightning as L
import torch

log = logging.getLogger("backbone_lab")
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a signal after saving a resumable checkpoint (`during`: "training", or
    "analysis" when the signal came during the end-of-run analysis)."""

    def __init__(self, signum: int, step: int, during: str = "training"):
        if during == "analysis":
            text = (f"stopped by {signal.Signals(signum).name} during the end-of-run analysis (training finished at "
                    f"step {step}, its checkpoint and snapshots are saved): the analysis is not done; rerun with "
                    "resume=auto (or python -m backbone_lab.analyze <run>) to finish it")
        else:
            text = (f"stopped by {signal.Signals(signum).name} at step {step}; "
                    "a checkpoint of that step was saved: rerun with resume=auto to continue")
        super().__init__(text)
        self.signum, self.step, self.during = signum, step, during


class _Record:
    signum: int | None = None


_record = _Record()


def requested() -> int | None:
    """The signal received since `signals_handled` was entered (None: none)."""
    return _record.signum


def _handler(signum, frame) -> None:
    if _record.signum is not None and signum == signal.SIGINT:
        raise KeyboardInterrupt  # a second Ctrl-C: stop now
    if _record.signum is None:
        _record.signum = signum
        log.warning("received %s: finishing the current optimizer step, then saving a checkpoint",
                    signal.Signals(signum).name)


def _install() -> None:
    for sig in SIGNALS:
        signal.signal(sig, _handler)


@contextmanager
def signals_handled():
    """Record SIGTERM/SIGINT for the duration (a no-op outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    _record.signum = None
    _install()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _record.signum = None


@contextmanager
def signals_interrupt(step: int, during: str = "analysis"):
    """Within: SIGTERM/SIGINT raise `Preempted(signum, step, during)` at once (a signal recorded
    before entering raises on entry). For work after training whose inputs are already durable
    (the end-of-run analysis), which a scheduler's grace period may not outlast."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _record.signum is not None:
        raise Preempted(_record.signum, step, during)
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def _raise(signum, frame):
        _record.signum = signum
        for sig, handler in previous.items():  # a second signal while unwinding: the recording handler
            signal.signal(sig, handler)
        log.warning("received %s during the %s: stopping it", signal.Signals(signum).name, during)
        raise Preempted(signum, step, during)

    for sig in SIGNALS:
        signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class PreemptionCallback(L.Callback):
    """Stops the Trainer at the first optimizer-step boundary after a recorded signal."""

    def __init__(self):
        self.stopped_at: int | None = None
        self.signum: int | None = None
        self._last_step = -1

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step
        if threading.current_thread() is threading.main_thread():
            _install()  # over Lightning's SIGTERM notifier (see the module docstring)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step:  # inside an accumulation: never stop here
            return
        self._last_step = step
        signum = requested() or 0
        if trainer.world_size > 1:
            flag = torch.tensor([signum], device=pl_module.device, dtype=torch.int64)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            signum = int(flag.item())
        if signum:
            self.stopped_at, self.signum = step, signum
            trainer.should_stop = True
