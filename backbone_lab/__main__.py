"""`python -m backbone_lab [overrides]`: the Hydra shell around `backbone_lab.train.train`.

    python -m backbone_lab                              # embedded CPU default
    python -m backbone_lab +experiment=optimizer_demo -m
    python -m backbone_lab -m optimizer=adamw,sgd seed=1,2
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from backbone_lab.config_schema import register_configs
from backbone_lab.sweep import register_resolvers

register_configs()
register_resolvers()  # ${bl_job_dirname:...} in conf/hydra/default.yaml


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from backbone_lab.errors import RankFailure, user_facing_errors
    from backbone_lab.preemption import Preempted
    from backbone_lab.sweep import in_multirun, run_sweep_job
    from backbone_lab.train import train

    try:
        if in_multirun():  # a sweep job: skip/resume finished work, never crash the other jobs
            result = run_sweep_job(cfg, train)
            if result is None:
                return None
        else:
            result = train(cfg)
    except user_facing_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RankFailure as err:  # a rank died or went silent: one line naming it
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except Preempted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        sys.exit(128 + err.signum)
    except KeyboardInterrupt:
        print("interrupted: stopped at once (second Ctrl-C); resume=auto continues from the last checkpoint",
              file=sys.stderr)
        sys.exit(130)
    from backbone_lab.summary_print import print_result

    print_result(result)
    value = result.get("final_val_loss")
    return float(value) if value is not None else None


def _multirun_flag_first(argv: list[str]) -> list[str]:
    """Hydra's argparse rejects overrides on both sides of `-m` (`+experiment=X -m seed=1,2`):
    move `-m` / `--multirun` in front of the overrides so every spelling works."""
    flags = [a for a in argv[1:] if a in ("-m", "--multirun")]
    return argv[:1] + flags + [a for a in argv[1:] if a not in ("-m", "--multirun")]


def _compose_error_line(err: BaseException) -> str:
    """Hydra's multi-line composition error as one line."""
    lines = [ln.strip() for e in (err, err.__cause__) if e is not None for ln in str(e).splitlines()]
    if "Config search path:" in lines:
        lines = lines[: lines.index("Config search path:")]
    keep = [ln for ln in lines if ln and ln != "schema" and not ln.startswith(("full_key", "object_type", "Set the environment"))]
    return " — ".join(dict.fromkeys(keep)) or type(err).__name__


def check_command_line(argv: list[str]) -> None:
    """Compose a single run's config once before Hydra does and run `train.check_config` on it:
    bad overrides (typos, wrong types, unknown options) and every check that needs no data end
    here in one line with exit status 2 — before Hydra creates any folder. Multiruns are
    checked per job."""
    args = argv[1:]
    if any(a.startswith("-") for a in args):  # -m, --cfg, --help, ...: leave them to Hydra
        _check_sweep_names(args)
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from backbone_lab.errors import user_facing_errors
    from backbone_lab.train import check_config

    conf_dir = str((Path(__file__).resolve().parent.parent / "conf"))
    try:
        with initialize_config_dir(version_base="1.3", config_dir=conf_dir):
            cfg = compose(config_name="config", overrides=args)
        check_config(cfg)
    except user_facing_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # noqa: BLE001 - Hydra's composition errors
        print(f"error: {_compose_error_line(err)}", file=sys.stderr)
        sys.exit(2)
    finally:
        GlobalHydra.instance().clear()


def _check_sweep_names(args: list[str]) -> None:
    """A multirun's folder names, checked before Hydra makes the sweep folder (one line, exit 2)."""
    from backbone_lab.errors import ConfigError
    from backbone_lab.input_checks import check_sweep_overrides

    try:
        check_sweep_overrides([a for a in args if not a.startswith("-")])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    """`python -m backbone_lab` / `backbone-lab`: exit 1 when a sweep ends with failed jobs."""
    from backbone_lab import sweep

    sys.argv = _multirun_flag_first(sys.argv)
    check_command_line(sys.argv)
    main()
    if sweep.FAILED_JOBS:
        print(f"error: {len(sweep.FAILED_JOBS)} sweep job(s) failed (see sweep_summary.md); "
              "rerun the same command to retry them, finished jobs are skipped", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
