"""`python -m backbone_lab [overrides]`: the Hydra shell around `backbone_lab.train.train`.

    python -m backbone_lab                              # embedded CPU default
    python -m backbone_lab +experiment=optimizer_demo -m
    python -m backbone_lab -m optimizer=adamw,sgd seed=1,2
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from backbone_lab.config_schema import register_configs
from backbone_lab.sweep import register_resolvers

register_configs()
register_resolvers()  # ${bl_job_dirname:...} in conf/hydra/default.yaml


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from backbone_lab.errors import user_facing_errors
    from backbone_lab.sweep import in_multirun, run_sweep_job
    from backbone_lab.train import train

    if in_multirun():  # a sweep job: skip/resume finished work, never crash the other jobs
        result = run_sweep_job(cfg, train)
        if result is None:
            return None
    else:
        try:
            result = train(cfg)
        except user_facing_errors() as err:
            logging.getLogger("backbone_lab").error("%s", err)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
    from backbone_lab.summary_print import print_result

    print_result(result)
    value = result.get("final_val_loss")
    return float(value) if value is not None else None


def _multirun_flag_first(argv: list[str]) -> list[str]:
    """Hydra's argparse rejects overrides on both sides of `-m` (`+experiment=X -m seed=1,2`):
    move `-m` / `--multirun` in front of the overrides so every spelling works."""
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    return argv[:1] + flags + [a for a in argv[1:] if a not in ("-m", "--multirun")]


if __name__ == "__main__":
    sys.argv = _multirun_flag_first(sys.argv)
    main()
