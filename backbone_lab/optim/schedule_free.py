"""Schedule-free AdamW and the switch between its training and evaluation weights.

Schedule-free AdamW (Defazio et al. 2024, "The Road Less Scheduled"; the `schedulefree` package)
keeps two sequences and evaluates gradients at a third:

    z_{t+1} = z_t − γ_t · (g_t / (√v̂_t + ε) + λ·y_t)     # the base AdamW-normalised SGD step
    x_{t+1} = (1 − c_{t+1})·x_t + c_{t+1}·z_{t+1}        # weighted average, c = γ²/Σγ²
    y_t     = (1 − β1)·z_t + β1·x_t                       # where the gradient g_t is taken

The model's parameters hold y during training (`optimizer.train()`), x for evaluation
(`optimizer.eval()`). No decaying schedule is needed (or wanted): pair it with
`schedule=warmup_constant` (a linear warmup, then a constant lr — identical to the package's own
`warmup_steps`).

Which weights a snapshot holds: x. Evaluation, trajectory snapshots and checkpoint saves run
inside `evaluation_weights(optimizer)`, so the val loss, the stored trunk trajectory and
`last.ckpt`'s weights all describe the same point — the averaged iterate x, which is the model
schedule-free training produces (y only exists to take gradients at). Bear in mind that x is an
average over the whole run: it moves more smoothly than any single-sequence optimizer's weights,
so its trajectory geometry is not the same object as AdamW's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import schedulefree
import torch

TRAINING_WEIGHTS = "training_weights"  # optimizer-state key of the exact y kept while in eval mode


class ScheduleFreeAdamW(schedulefree.AdamWScheduleFree):
    """`schedulefree.AdamWScheduleFree` that starts in training mode and switches back exactly.

    * Constructed in training mode (the package starts in eval mode and refuses to step), so a
      factory call followed by `step()` just works; nothing has moved yet, so no weight changes.
    * `eval()` keeps an exact copy of the training weights y in the optimizer state
      (`state[p]["training_weights"]`) and `train()` restores it, instead of recomputing y from
      x and z (mathematically the inverse, but not bit for bit). A checkpoint saved in eval mode
      therefore carries y, and `load_state_dict` + `train()` resumes the run bit for bit.

    Arguments are those of `schedulefree.AdamWScheduleFree` (lr, betas, eps, weight_decay,
    warmup_steps, r, weight_lr_power, foreach).
    """

    def __init__(self, params: Iterable[Any], **kwargs: Any):
        super().__init__(params, **kwargs)
        self.train()

    @torch.no_grad()
    def eval(self) -> None:
        for group in self.param_groups:
            if group["train_mode"]:
                for p in group["params"]:
                    state = self.state.get(p)
                    if state and "z" in state:
                        state[TRAINING_WEIGHTS] = p.detach().clone()
        super().eval()

    @torch.no_grad()
    def train(self) -> None:
        switching = [not group["train_mode"] for group in self.param_groups]
        super().train()
        for group, was_eval in zip(self.param_groups, switching):
            if was_eval:
                for p in group["params"]:
                    state = self.state.get(p)
                    if state and TRAINING_WEIGHTS in state:
                        p.copy_(state.pop(TRAINING_WEIGHTS))


def has_evaluation_weights(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` keeps separate evaluation weights (schedule-free: `.eval()`/`.train()`)."""
    return callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))


@contextmanager
def evaluation_weights(optimizer: torch.optim.Optimizer | None) -> Iterator[None]:
    """Put the evaluation weights into the model for the duration of the block.

    For an optimizer with `.eval()` / `.train()` (schedule-free) the parameters hold x inside the
    block; afterwards the training weights are restored bit for bit (from a copy taken on entry,
    whatever the optimizer's own switch does) and the optimizer is back in training mode. For
    every other optimizer (and `None`) this is a no-op.

        with evaluation_weights(trainer.optimizers[0]):
            val_loss = evaluate(model)
    """
    if optimizer is None or not has_evaluation_weights(optimizer) or _in_eval_mode(optimizer):
        yield  # nothing to switch (or already switched by an enclosing block)
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()
        with torch.no_grad():
            for p, training in zip(params, saved):
                p.copy_(training)


def _in_eval_mode(optimizer: torch.optim.Optimizer) -> bool:
    return any(group.get("train_mode") is False for group in optimizer.param_groups)


def use_training_weights(optimizer: torch.optim.Optimizer | None) -> None:
    """Switch a schedule-free optimizer to its training weights (no-op for any other).

    Call it before the first training step of a run that may have been restored from a
    checkpoint saved in eval mode (e.g. in `on_train_start`): the model then holds x, and the
    gradient must be taken at y.
    """
    if optimizer is not None and has_evaluation_weights(optimizer):
        optimizer.train()
