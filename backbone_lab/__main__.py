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
        import signal

        name = signal.Signals(err.signum).name
        where = (f"during the end-of-run analysis (training finished at step {err.step}, its checkpoint and "
                 "snapshots are saved; the analysis is not done)" if err.during == "analysis" else
                 f"at step {err.step}, a checkpoint of that step was saved")
        print(f"interrupted: stopped by {name} {where}; continue with: {continue_command(cfg, in_multirun())}",
              file=sys.stderr)
        sys.exit(128 + err.signum)
    except KeyboardInterrupt:
        print("interrupted: stopped at once (second Ctrl-C); continue from the last checkpoint with: "
              f"{continue_command(cfg, in_multirun())}", file=sys.stderr)
        sys.exit(130)
    from backbone_lab.summary_print import print_result

    if result.get("status") == "already complete":
        print(f"already complete: {result['run_dir']} finished earlier (DONE marker, same config); nothing to "
              f"train or analyse (re-analyse with python -m backbone_lab.analyze {result['run_dir']} --overwrite)")
    print_result(result)
    value = result.get("final_val_loss")
    return float(value) if value is not None else None


def continue_command(cfg: DictConfig, multirun: bool, argv: list[str] | None = None) -> str:
    """The exact command that continues this run: a sweep reruns as it was started (finished jobs
    are skipped, unfinished ones resume); a single run gets its folder's run_name (or its
    run_dir) and resume=auto."""
    import shlex

    args = list(sys.argv[1:] if argv is None else argv)
    if multirun:
        return shlex.join(["python", "-m", "backbone_lab", *args])
    keep = [a for a in args if not a.lstrip("+").startswith(("resume=", "run_name="))]
    if not any(a.lstrip("+").startswith("run_dir=") for a in args):
        run_dir = cfg.get("run_dir")
        keep.append(f"run_name={Path(run_dir).name if run_dir else cfg.run_name}")
    return shlex.join(["python", "-m", "backbone_lab", *keep, "resume=auto"])


def check_resume_names_a_run(cfg: DictConfig, args: list[str]) -> None:
    """`resume=auto` continues the run in `runs/<run_name>`: with the default run_name (a new
    timestamp each time) it would silently start a new run. Refuse, with the command to use."""
    import shlex

    from omegaconf import OmegaConf

    from backbone_lab.errors import ConfigError

    if cfg.get("resume") != "auto" or cfg.get("run_dir"):
        return
    name = OmegaConf.to_container(cfg, resolve=False).get("run_name")
    if isinstance(name, str) and name.startswith("${now:"):
        keep = [a for a in args if not a.lstrip("+").startswith("resume=")]
        raise ConfigError("resume=auto needs run_name=NAME, the folder to continue (without it every run starts in a "
                          "new timestamped folder): " + shlex.join(["python", "-m", "backbone_lab", *keep,
                                                                    "run_name=NAME", "resume=auto"]))


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


def nearest_name_hint(err: BaseException, args: list[str]) -> str | None:
    """One line naming the nearest valid name for a mistyped group option (`optimizer=adamww` ->
    adamw) or key (`analysis.anchr_step=1` -> anchor_step, `train.max_step=10` -> max_steps, not
    Hydra's `+train.max_step=10`); None when nothing close exists."""
    import re

    from backbone_lab.data.sources import sources_with_option
    from backbone_lab.did_you_mean import nearest

    text = "\n".join(str(e) for e in (err, err.__cause__) if e is not None)
    missing = re.search(r"Could not find '([\w/]+)/([^'/]+)'", text)
    if missing and "Available options" in text:
        group, name = missing.groups()
        listed = text.split("Available options", 1)[1].splitlines()[1:]
        options = [ln.strip() for ln in listed if ln.strip() and " " not in ln.strip()]
        best = nearest(name, options)
        plus = "+" if any(a.startswith(f"+{group}=") for a in args) else ""
        if best:
            return (f"{plus}{group}={name}: no such option in conf/{group}/; did you mean {plus}{group}={best}? "
                    f"(options: {', '.join(options)})")
        return None
    key = re.search(r"Could not override '([\w.]+)'", text)
    if key and "not in" in text:
        dotted = key.group(1)
        parent, _, leaf = dotted.rpartition(".")
        if parent == "data.options" and (owners := sources_with_option(leaf)):
            choices = " or ".join(f"data={name}" for name in owners)
            return (f"{dotted}: not an option of this data source; it is one of {choices}: "
                    f"choose {choices} with it")
        fields = _keys_of(parent, [a for a in args if a.lstrip("+").split("=", 1)[0] != dotted])
        best = nearest(leaf, fields or [])
        if best:
            value = next((a.split("=", 1)[1] for a in args if a.lstrip("+").split("=", 1)[0] == dotted), "...")
            why = re.search(r"Key '[^']+' (?:not in '[^']+'|is not in struct)", text)
            return (f"{dotted}: {why.group(0) if why else 'no such key'}; did you mean "
                    f"{f'{parent}.' if parent else ''}{best}={value}?")
    return None


def _keys_of(parent: str, args: list[str]) -> list[str] | None:
    """The keys of node `parent` in the config composed from `args` (None if that fails)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig, OmegaConf

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=_conf_dir()):
            cfg = compose(config_name="config", overrides=args)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else None
    except Exception:  # noqa: BLE001 - no hint then, Hydra's own message stands
        return None


def _conf_dir() -> str:
    return str(Path(__file__).resolve().parent.parent / "conf")


def check_command_line(argv: list[str]) -> None:
    """Compose a single run's config once before Hydra does and run `train.check_config` on it:
    bad overrides (typos, wrong types, unknown options) and every check that needs no data end
    here in one line with exit status 2 — before Hydra creates any folder. Composition errors
    (typos) come before torch, Lightning or W&B are imported. Multiruns are checked per job."""
    args = argv[1:]
    if any(a.startswith("-") for a in args):  # -m, --cfg, --help, ...: leave them to Hydra
        _check_sweep_names(args)
        return
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from backbone_lab.errors import user_facing_errors

    try:
        with initialize_config_dir(version_base="1.3", config_dir=_conf_dir()):
            cfg = compose(config_name="config", overrides=args)  # the schemas are torch-free modules
        check_resume_names_a_run(cfg, args)
        from backbone_lab.train import check_config  # torch and Lightning: only for a config that composed

        check_config(cfg)
    except user_facing_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # noqa: BLE001 - Hydra's composition errors
        print(f"error: {nearest_name_hint(err, args) or _compose_error_line(err)}", file=sys.stderr)
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
