"""Start a run from another run's weights (reheating, PAPER_MAP §4.3): weights only, fresh optimizer.

`init_from=<run_dir>` takes the source run's final weights (`checkpoints/last.ckpt`, which is
always the final step); `init_step=S` takes step S from a full checkpoint of that step
(`checkpoints/stepSSSSSS.ckpt`, kept when the source ran with `train.keep_checkpoints=true`, or
`last.ckpt` when it is step S). A trunk snapshot alone is not enough: its non-trunk weights
(embeddings, norms) would come from another step, so such a request is refused in one line.
Checkpoints are read as data only (`weights_only=True`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from backbone_lab.checkpoint_io import checkpoint_step, load_checkpoint_file
from backbone_lab.errors import ConfigError
from backbone_lab.run_dir import RunDir

log = logging.getLogger("backbone_lab")


def _model_state(ckpt: Path) -> dict[str, torch.Tensor]:
    try:
        state = load_checkpoint_file(ckpt)["state_dict"]
    except Exception as err:  # noqa: BLE001 - a damaged or planted file is refused, never executed
        raise ConfigError(f"init_from: {ckpt} does not load as a checkpoint ({type(err).__name__}: "
                          f"{str(err).strip().splitlines()[0][:160]}); use another source run") from None
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def source_checkpoint(source: RunDir, step: int | None) -> tuple[Path, int]:
    """(the full checkpoint of `source` at `step` (None: the final one), its step)."""
    last = source.last_checkpoint
    if not last.exists():
        raise ConfigError(f"init_from={source.root}: no checkpoints/last.ckpt there (is it a finished run folder?)")
    try:
        last_step = checkpoint_step(last)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"init_from: {last} does not load as a checkpoint ({type(err).__name__}); "
                          "use another source run") from None
    if step is None or int(step) == last_step:
        return last, last_step
    full = source.step_checkpoint(int(step))
    if full.exists():
        return full, int(step)
    raise ConfigError(f"init_step={step}: run {source.root} has no full checkpoint of step {step} (last.ckpt is step "
                      f"{last_step}); start from its final weights (drop init_step), or rerun the source with "
                      "train.keep_checkpoints=true")


def load_initial_weights(model: torch.nn.Module, source: str | Path, step: int | None = None) -> int:
    """Copy the source run's weights into `model`; returns the source step used."""
    ckpt, used = source_checkpoint(RunDir(source), step)
    missing, unexpected = model.load_state_dict(_model_state(ckpt), strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight")]
    if missing or unexpected:
        raise ConfigError(
            f"init_from={source}: model shapes differ from the source run (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); use the same model config"
        )
    log.info("init_from: weights of %s (step %d)", ckpt, used)
    return used
