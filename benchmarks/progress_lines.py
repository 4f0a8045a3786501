"""A Lightning callback that prints one plain line every `every` optimizer steps.

For logs that are not terminals (a GPU check whose output is collected afterwards), where a
progress bar prints nothing useful: `step 200/600  41 s  4.9 steps/s  loss 3.412`. Reading the
loss costs one host sync per line, never per step. Added to a run from the command line:

    python -m backbone_lab ... +callbacks.lines._target_=progress_lines.ProgressLines +callbacks.lines.every=50

(with `benchmarks/` on PYTHONPATH, as benchmarks/gpu_check.sh sets it).
"""

from __future__ import annotations

import time

import lightning as L


class ProgressLines(L.Callback):
    def __init__(self, every: int = 50):
        self.every = max(1, int(every))
        self._t0 = time.perf_counter()
        self._last_step = -1

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        print(f"    training: {trainer.max_steps} optimizer steps", flush=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step or not (step % self.every == 0 or step >= trainer.max_steps):
            return
        self._last_step = step
        elapsed = time.perf_counter() - self._t0
        loss = trainer.callback_metrics.get("loss")
        loss_text = f"  loss {float(loss):.3f}" if loss is not None else ""
        print(f"    step {step}/{trainer.max_steps}  {elapsed:.0f} s  {step / max(elapsed, 1e-9):.2f} steps/s{loss_text}",
              flush=True)
