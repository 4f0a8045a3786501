"""Start a run from another run's weights (reheating, SPEC §4.3): weights only, fresh optimizer.

`init_from=<run_dir>` takes the source run's final weights (`checkpoints/last.ckpt`);
`init_step=S` takes step S: the full checkpoint `checkpoints/stepSSSSSS.ckpt` when it exists,
else the trunk snapshot of step S from `trajectory/` with the non-trunk parameters of last.ckpt
(a warning says so).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from backbone_lab.errors import ConfigError

log = logging.getLogger("backbone_lab")


def _model_state(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def load_initial_weights(model: torch.nn.Module, source: str | Path, step: int | None = None) -> int:
    """Copy the source run's weights into `model`; returns the source step used."""
    source = Path(source)
    last = source / "checkpoints" / "last.ckpt"
    if not last.exists():
        raise ConfigError(f"init_from={source}: no checkpoints/last.ckpt there (is it a finished run folder?)")
    if step is None:
        state = _model_state(last)
        used = int(torch.load(last, map_location="cpu", weights_only=True).get("global_step", -1))
    else:
        full = source / "checkpoints" / f"step{int(step):06d}.ckpt"
        if full.exists():
            state = _model_state(full)
        else:
            from backbone_lab.trajectory.store import TrajectoryReader

            reader = TrajectoryReader(source / "trajectory")
            if int(step) not in reader.steps:
                raise ConfigError(
                    f"init_step={step}: run {source} has neither checkpoints/step{int(step):06d}.ckpt "
                    f"nor a trunk snapshot at that step (snapshots: {reader.steps[:5]}...)"
                )
            log.warning("init_from: trunk from snapshot %s, other parameters from last.ckpt", step)
            state = _model_state(last)
            for name, tensor in reader.load_named(int(step)).items():
                state[name] = torch.as_tensor(tensor).reshape(state[name].shape)
        used = int(step)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight")]
    if missing or unexpected:
        raise ConfigError(
            f"init_from={source}: model shapes differ from the source run (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); use the same model config"
        )
    return used
