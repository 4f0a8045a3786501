"""Sweeps that survive failures, resume, and skip what is already done.

`python -m backbone_lab ... -m` runs each job through `run_sweep_job(cfg, train)`:

1. **Skip finished work.** The job's *fingerprint* is a hash of its resolved config minus the
   keys that name places or presentation (`run_identity.NEUTRAL_KEYS`: run_dir, run_name, paths,
   loggers, tags, progress bars, ...). Earlier sweeps of the same experiment
   (`<output_root>/<experiment_name>/*/`) are scanned for job folders whose saved `config.yaml`
   has the same fingerprint:
   * one marked `DONE` (finished or cleanly diverged) -> the job is skipped;
   * an unfinished one (`FAILED`, or no marker: killed) that has `checkpoints/last.ckpt` -> the
     job continues *in that folder* with `resume=auto` (exact Lightning resume);
   * otherwise it runs from scratch in its own folder.
   A skipped or relocated job leaves `REDIRECT.json` (`{"run_dir": ..., "reason": ...}`) in its
   own folder, so the sweep summary and `python -m backbone_lab.compare <sweep dir>` find its
   results. Do not run the *same* sweep twice at the same time (an unfinished folder of a sweep
   that is still running would be picked up).
2. **Never crash the multirun.** Any exception of a job is logged, recorded in `FAILED` (train()
   writes it; written here too for errors raised before training starts), and the job returns
   None, so the other jobs run and `on_multirun_end` still prints the summary.
3. **W&B per job.** The job's W&B run is named `<experiment>/<job folder>`, grouped by
   experiment, `job_type=sweep`, tagged and configured with the swept values (`swept.*`), so
   dashboards can group and compare them. Only logger settings change: the run's own config is
   untouched.

`SweepSummary` is a Hydra callback (configured in `conf/hydra/default.yaml`) whose
`on_multirun_end` prints a table of job states and writes `<sweep dir>/sweep_summary.{json,md}`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from backbone_lab.run_identity import fingerprint
from backbone_lab.run_markers import read_marker, write_marker
from backbone_lab.run_dir import RunDir
from backbone_lab.durable import atomic_write_json, atomic_write_text

log = logging.getLogger("backbone_lab")

MAX_DIRNAME = 120  # file systems allow 255 bytes per path component


def job_dirname(override_dirname: str, max_len: int = MAX_DIRNAME) -> str:
    """Sweep job folder name from Hydra's override_dirname: '/' made safe, long names cut.

    Used as `${bl_job_dirname:${hydra.job.override_dirname}}` in `conf/hydra/default.yaml`: a
    long override list would otherwise exceed the 255-byte name limit and crash the sweep; a cut
    name keeps its first characters plus a hash of the whole (still unique per job).
    """
    name = str(override_dirname).replace("/", "_").replace("\\", "_")
    if len(name) <= max_len:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: max_len - 10]}~{digest}"


def register_resolvers() -> None:
    """Register `bl_job_dirname` (idempotent). Runs on import: Hydra imports this module when it
    builds the `SweepSummary` callback, also inside joblib/submitit worker processes."""
    if not OmegaConf.has_resolver("bl_job_dirname"):
        OmegaConf.register_new_resolver("bl_job_dirname", job_dirname)


register_resolvers()

REDIRECT = "REDIRECT.json"


def _saved_fingerprint(run_dir: Path) -> str | None:
    try:
        return fingerprint(OmegaConf.load(RunDir(run_dir).config))
    except Exception:  # noqa: BLE001 - an unreadable old folder simply does not match
        return None


# --------------------------------------------------------------------------- hydra context
def in_multirun() -> bool:
    """Whether we run as a job of a Hydra multirun (`-m` or `hydra.mode: MULTIRUN`)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001
        return False


def _job_context() -> dict:
    """job_dir, sweep_dir, job num, and the job's override list (from HydraConfig)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir).resolve()
    subdir_parts = len(Path(str(hc.sweep.subdir)).parts)  # override values may hold '/'
    sweep_dir = job_dir
    for _ in range(subdir_parts):
        sweep_dir = sweep_dir.parent
    return {"job_dir": job_dir, "sweep_dir": sweep_dir, "num": int(hc.job.num),
            "overrides": list(hc.overrides.task), "override_dirname": str(hc.job.override_dirname)}


def find_previous(experiment_root: Path, current_sweep: Path, fp: str) -> tuple[Path | None, Path | None]:
    """(a DONE job folder, an unfinished resumable job folder) with fingerprint `fp` in earlier
    sweeps under `experiment_root` (newest sweeps first)."""
    unfinished = None
    if not experiment_root.is_dir():
        return None, None
    sweeps = sorted((p for p in experiment_root.iterdir() if p.is_dir() and p.resolve() != current_sweep),
                    reverse=True)
    for sweep in sweeps:
        for cfg_file in sorted(sweep.rglob("config.yaml")):
            run_dir = cfg_file.parent
            if ".hydra" in run_dir.parts or "analysis" in run_dir.parts:
                continue
            if _saved_fingerprint(run_dir) != fp:
                continue
            marker = read_marker(run_dir)
            if marker and marker[0] == "DONE":
                return run_dir, None
            if unfinished is None and RunDir(run_dir).last_checkpoint.exists():
                unfinished = run_dir
    return None, unfinished


_NOT_SWEPT = ("run_name", "resume", "run_dir", "experiment", "logger", "callbacks", "analyze", "hydra", "paths")


def _swept_values(overrides: list[str]) -> dict[str, str]:
    """The job's own `key=value` overrides, minus places / loggers / the experiment choice."""
    out = {}
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if sep and key.split(".", 1)[0].split("/", 1)[0] not in _NOT_SWEPT:
            out[key] = value
    return out


def _configure_wandb(cfg: DictConfig, ctx: dict, swept: dict[str, str]) -> None:
    """Name, group and tag the job's W&B run; its config gets `swept`: only the keys the sweep
    varies, with typed values from the job's config (`loggers.sweep_values`)."""
    from backbone_lab.loggers import sweep_values

    node = (cfg.get("logger") or {}).get("wandb") if cfg.get("logger") else None
    if node is None:
        return
    job_name = ctx["job_dir"].name
    values = sweep_values(cfg, ctx["sweep_dir"], swept)
    with open_dict(node):
        node.name = f"{cfg.get('experiment_name', 'default')}/{job_name}"
        node.job_type = "sweep"
        node.tags = list(node.get("tags") or []) + [f"{k}={v}"[:64] for k, v in swept.items() if k in values]
        node.config = {"swept": values, "sweep_dir": str(ctx["sweep_dir"]), "job_num": ctx["num"]}


# --------------------------------------------------------------------------- the job wrapper
def run_sweep_job(cfg: DictConfig, train_fn: Callable[[DictConfig], dict]) -> dict | None:
    """Run one multirun job: skip / resume / run, never raising (see the module docstring)."""
    from backbone_lab.distributed import env_global_rank  # torch and Lightning: a job imports them,
    from backbone_lab.preemption import Preempted  # the CLI's config check does not

    ctx = _job_context()
    job_dir = ctx["job_dir"]
    swept = _swept_values(ctx["overrides"])
    try:
        fp = fingerprint(cfg)
        experiment_root = ctx["sweep_dir"].parent
        done, unfinished = find_previous(experiment_root, ctx["sweep_dir"], fp)
        if done is not None:
            _write_redirect(job_dir, done, "done", fp)
            marker = read_marker(done)
            log.info("job %s: already done in %s (skipped)", job_dir.name, done)
            payload = marker[1] if marker else {}
            return {**payload, "status": "skipped", "previous_status": payload.get("status"), "run_dir": str(done)}
        with open_dict(cfg):
            if unfinished is not None:
                _write_redirect(job_dir, unfinished, "resumed", fp)
                log.info("job %s: resuming the unfinished run in %s", job_dir.name, unfinished)
                cfg.run_dir = str(unfinished)
                cfg.resume = "auto"
            elif RunDir(job_dir).config.exists():  # this very job again (e.g. re-queued by SLURM)
                cfg.resume = "auto"
            cfg.run_name = job_dir.name
        _configure_wandb(cfg, ctx, swept)
        result = train_fn(cfg)
        result["fingerprint"] = fp
        return result
    except Preempted:  # the scheduler wants the whole process to stop (a rerun / requeue resumes)
        raise
    except Exception as err:  # noqa: BLE001 - one failing job must not stop the sweep
        run_dir = Path(cfg.get("run_dir") or job_dir)
        if env_global_rank() == 0 and (read_marker(run_dir) is None or read_marker(run_dir)[0] != "FAILED"):
            write_marker(run_dir, "FAILED", {"error": f"{type(err).__name__}: {err}",
                                             "traceback": traceback.format_exc()})
        log.error("job %s failed (%s: %s); the sweep goes on", job_dir.name, type(err).__name__, err)
        return None


def _write_redirect(job_dir: Path, target: Path, reason: str, fp: str) -> None:
    from backbone_lab.distributed import env_global_rank  # torch: imported by a sweep job only

    if env_global_rank() != 0:  # every rank of a multi-task job decides alike; rank 0 writes
        return
    job_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job_dir / REDIRECT, {"run_dir": str(target), "reason": reason, "fingerprint": fp}, indent=2)


def resolve_redirect(job_dir: Path) -> tuple[Path, str | None]:
    """(folder holding the job's results, redirect reason or None)."""
    path = Path(job_dir) / REDIRECT
    if path.exists():
        try:
            info = json.loads(path.read_text())
            return Path(info["run_dir"]), info.get("reason")
        except (json.JSONDecodeError, KeyError):
            pass
    return Path(job_dir), None


# --------------------------------------------------------------------------- job states
def job_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders of a sweep: those holding config.yaml, a marker or a REDIRECT (not .hydra)."""
    sweep_dir = Path(sweep_dir)
    found = set()
    for name in ("config.yaml", "DONE", "FAILED", REDIRECT, ".hydra"):
        for p in sweep_dir.rglob(name):
            d = p.parent
            rel = d.relative_to(sweep_dir).parts
            if d == sweep_dir or ".hydra" in rel or "analysis" in rel:
                continue
            found.add(d)
    # keep the outermost folder of each job (a job folder may contain nested outputs)
    dirs = sorted(found)
    return [d for d in dirs if not any(o != d and o in d.parents for o in dirs)]


def job_state(job_dir: Path) -> dict:
    """State of one job folder: {job, state, run_dir, step, error, numbers...}."""
    run_dir, reason = resolve_redirect(job_dir)
    marker = read_marker(run_dir)
    row: dict[str, Any] = {"job": Path(job_dir).name, "run_dir": str(run_dir)}
    if marker is None:
        row["state"] = "unfinished"
    elif marker[0] in ("FAILED", "INTERRUPTED"):
        row["state"] = marker[0].lower()
        row["error"] = str(marker[1].get("error", ""))[:200]
    else:
        payload = marker[1]
        row["state"] = "diverged" if payload.get("status") == "diverged" else "done"
        if row["state"] == "diverged":
            row["step"] = payload.get("diverged_at_step")
        for key in ("final_val_loss", "best_p_ood", "steps_done", "train_seconds"):
            if key in payload:
                row[key] = payload[key]
    if reason == "done":
        row["state"] = f"skipped ({row['state']} earlier)"
    elif reason == "resumed":
        row["state"] = f"{row['state']} (resumed)"
    return row


def summarize(sweep_dir: Path) -> list[dict]:
    return [job_state(d) for d in job_dirs(Path(sweep_dir))]


def format_summary(rows: list[dict]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if math.isfinite(v) else str(v)
        return "" if v is None else str(v)

    lines = ["| job | state | final val | best p_ood | note |", "|---|---|---|---|---|"]
    for r in rows:
        note = r.get("error") or (f"at step {r['step']}" if r.get("step") is not None else "")
        if r["run_dir"] and not r["run_dir"].endswith(r["job"]):
            note = (note + " " if note else "") + f"in {r['run_dir']}"
        lines.append(f"| {r['job']} | {r['state']} | {fmt(r.get('final_val_loss'))} | "
                     f"{fmt(r.get('best_p_ood'))} | {note} |")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"].split(" ")[0]] = counts.get(r["state"].split(" ")[0], 0) + 1
    lines.append("")
    lines.append("jobs: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return "\n".join(lines)


try:  # the callback base class lives in hydra; keep this module importable without it
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object  # type: ignore[assignment,misc]


FAILED_JOBS: list[dict] = []  # rows of the last multirun's failed jobs (the CLI exits 1 if any)


class SweepSummary(_HydraCallback):
    """Hydra callback: at the end of a multirun, print and save the state of every job."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            rows = summarize(sweep_dir)
            text = format_summary(rows)
            atomic_write_text(sweep_dir / "sweep_summary.md", f"# Sweep {sweep_dir}\n\n{text}\n")
            atomic_write_json(sweep_dir / "sweep_summary.json", rows, indent=2, default=str)
            print(f"\nSweep summary ({sweep_dir}):\n{text}\n"
                  f"compare: python -m backbone_lab.compare {sweep_dir}", flush=True)
            FAILED_JOBS[:] = [r for r in rows if r.get("state", "").startswith("failed")]
        except Exception as err:  # noqa: BLE001 - a summary must never fail the sweep
            log.warning("could not summarise the sweep: %s", err)
