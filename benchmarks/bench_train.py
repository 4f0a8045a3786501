"""CPU training benchmarks. Not a test: prints figures, and ratios measured in the same run.

The thread count is pinned (--threads, default: the cores this process may run on) through
OMP_NUM_THREADS / MKL_NUM_THREADS and torch.set_num_threads, for this process and the demo's.

1. **Bare loop**: a plain PyTorch loop vs `BackboneLitModule` under a Lightning `Trainer`, on the
   same model, pre-built batches (data loading excluded from both), optimizer, lr schedule and
   clipping. Rounds are interleaved (plain, Lightning, plain, Lightning, ...; default 5), each
   run excludes its warm-up steps; steps/s as median [min–max] over rounds and the ratio of the
   medians (target >= 0.9x).
2. **The shipped default, end to end**: `python -m backbone_lab` exactly as `make demo` runs it
   (evaluation, snapshots, checkpoints, the W&B logger offline, progress bar, analysis, report),
   in a subprocess with a fresh cache: wall time, its phases (data preparation, training =
   Lightning's fit with evaluations and snapshots, analysis, the rest = start-up, imports,
   configuration, report) and the peak RSS of the training process.

    python benchmarks/bench_train.py [--rounds 5] [--warmup 20] [--steps 200] [--threads N]
                                     [--skip-demo] [--demo-repeats 1] [--json out.json]
    python benchmarks/bench_train.py --dry-run     # smallest sizes: proves the script runs
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_RATIO = 0.9


# torch, and step_timer which imports it, are imported only after pin_threads (inside the functions).
def pin_threads(n: int) -> None:
    """Before torch is imported: the same number of threads here and in every subprocess."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- 1. bare loop
def _compose(cache: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from backbone_lab.config_schema import register_configs

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        return compose(config_name="config", overrides=[f"paths.cache_dir={cache}", *overrides])


class PlainLoop:
    """The module's own loss, optimizer and scheduler, stepped by hand (no Lightning)."""

    def __init__(self, make_module, batches: list[dict]):
        self.module, self.batches = make_module(), batches

    def run(self, warmup: int, steps: int) -> float:
        import torch

        opt_cfg = self.module.configure_optimizers()
        optimizer, scheduler = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
        self.module.train()
        t0 = None
        for i, batch in enumerate(self.batches[: warmup + steps]):
            if i == warmup:
                t0 = time.perf_counter()
            loss = self.module.loss_parts(batch, 2.0).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
        return time.perf_counter() - t0


class LightningLoop:
    """The same module class through a fresh `Trainer.fit` per run, timed by `StepTimer`."""

    def __init__(self, make_module, batches: list[dict]):
        self.module, self.batches = make_module(), batches

    def run(self, warmup: int, steps: int) -> float:
        import lightning as L
        import torch

        from step_timer import StepTimer

        timer = StepTimer(warmup, steps)
        trainer = L.Trainer(max_steps=warmup + steps, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
                            limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu", callbacks=[timer])
        # batch_size=None: the loader hands out the pre-built batches as they are
        loader = torch.utils.data.DataLoader(self.batches[: warmup + steps], batch_size=None)
        trainer.fit(self.module, train_dataloaders=loader)
        return timer.seconds


def bench_bare_loop(args, cache: Path) -> dict:
    import logging

    import torch
    from hydra.utils import instantiate

    from backbone_lab.config_schema import build
    from backbone_lab.data.datamodule import BackboneDataModule
    from backbone_lab.lit_module import BackboneLitModule
    from backbone_lab.train import typed
    from rounds import Spread, interleaved

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    cfg = _compose(cache, args.config_overrides)
    conf = typed(cfg)
    dm = BackboneDataModule(build("data", cfg.data), seq_len=int(cfg.model.seq_len), seed=int(cfg.seed))
    dm.setup("fit")
    model_cfg = conf["model"].with_vocab(dm.vocab_size)

    def make_module():
        torch.manual_seed(0)
        return BackboneLitModule(model_cfg, instantiate(cfg.optimizer), conf["schedule"], conf["objective"], conf["train"])

    batches = []
    for batch in dm.train_dataloader():
        batches.append(batch)
        if len(batches) == args.warmup + args.steps:
            break
    loops = {"plain": PlainLoop(make_module, batches), "lightning": LightningLoop(make_module, batches)}

    def progress(r, name, seconds):
        print(f"  round {r}/{args.rounds}  {name:9s}: {args.steps / seconds:8.2f} steps/s", flush=True)

    raw = interleaved({name: (lambda loop=loop: loop.run(args.warmup, args.steps)) for name, loop in loops.items()},
                      args.rounds, progress)
    rates = {name: Spread.of([args.steps / s for s in seconds]) for name, seconds in raw.items()}
    return {"model": model_cfg.name, "micro_batch": int(cfg.data.micro_batch_size), "rounds": args.rounds,
            "warmup": args.warmup, "steps": args.steps,
            "steps_per_s": {name: s.as_dict() for name, s in rates.items()},
            "ratio_lightning_over_plain": rates["lightning"].median / rates["plain"].median}


# ----------------------------------------------------------------------------- 2. the shipped default
def _run_demo_once(overrides: list[str], root: Path) -> dict:
    """One `python -m backbone_lab` in a subprocess; its wall time, phases and peak RSS."""
    root.mkdir(parents=True, exist_ok=True)
    out_root, log_path = root / "out", root / "demo.log"
    env = dict(os.environ, BACKBONE_LAB_OUTPUT=str(out_root), BACKBONE_LAB_CACHE=str(root / "cache"),
               WANDB_DIR=str(root / "wandb"), WANDB_CACHE_DIR=str(root / "wandb_cache"),
               WANDB_CONFIG_DIR=str(root / "wandb_config"), WANDB_DATA_DIR=str(root / "wandb_data"))
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "backbone_lab", *overrides], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(log_path.read_text()[-3000:])
        raise SystemExit(f"the demo failed (exit {proc.returncode})")
    run_dir = max((out_root / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    done = json.loads((run_dir / "DONE").read_text())
    summary = json.loads((run_dir / "analysis" / "summary.json").read_text())
    found = re.search(r"data ready in ([0-9.]+)s", (run_dir / "backbone_lab.log").read_text())
    phases = {"data": float(found.group(1)) if found else float("nan"),
              "training": float(done["train_seconds"]), "analysis": float(summary.get("elapsed_seconds", "nan"))}
    phases["rest"] = wall - sum(v for v in phases.values() if v == v)
    return {"wall_s": wall, "phases_s": phases, "peak_rss_mb": usage.ru_maxrss / 1024,
            "steps": int(done.get("steps_done", 0))}


def bench_demo(args, root: Path) -> list[dict]:
    results = []
    for i in range(args.demo_repeats):
        res = _run_demo_once(args.demo_overrides, root)  # the cache stays: repeat 1 is cold, the next warm
        res["cache"] = "cold" if i == 0 else "warm"
        results.append(res)
        p = res["phases_s"]
        print(f"  demo {i + 1}/{args.demo_repeats} ({res['cache']} cache): wall {res['wall_s']:.1f} s = data {p['data']:.1f} "
              f"+ training {p['training']:.1f} + analysis {p['analysis']:.1f} + rest {p['rest']:.1f}; "
              f"peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the bare-loop comparison (>= 4)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per run")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per run")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="CPU threads (pinned)")
    parser.add_argument("--skip-demo", action="store_true", help="only the bare-loop comparison")
    parser.add_argument("--demo-repeats", type=int, default=1, help="end-to-end demo runs (the first on a cold cache)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--dry-run", action="store_true", help="smallest sizes (debug=tiny): proves the script runs")
    args = parser.parse_args(argv)
    args.config_overrides, args.demo_overrides = [], []   # the shipped default, as `make demo` runs it
    if args.dry_run:
        args.rounds, args.warmup, args.steps, args.demo_repeats = 2, 1, 3, 1
        args.config_overrides = args.demo_overrides = ["debug=tiny"]
    pin_threads(args.threads)
    import torch

    print(f"CPU training benchmarks: torch {torch.__version__}, {torch.get_num_threads()} thread(s) pinned"
          f"{' (DRY RUN: debug=tiny, numbers mean nothing)' if args.dry_run else ''}", flush=True)
    result: dict = {"threads": args.threads, "torch": torch.__version__, "dry_run": args.dry_run}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"1. bare loop, {'embedded default' if not args.dry_run else 'debug=tiny'}: "
              f"{args.rounds} interleaved rounds of {args.warmup} warm-up + {args.steps} timed steps", flush=True)
        bare = result["bare_loop"] = bench_bare_loop(args, tmp / "cache")
        sps = bare["steps_per_s"]
        for name, label in (("plain", "plain PyTorch loop"), ("lightning", "Lightning module")):
            s = sps[name]
            print(f"  {label:18s}: {s['median']:8.2f} steps/s  [{s['min']:.2f}–{s['max']:.2f}]")
        print(f"  ratio Lightning / plain (medians) = {bare['ratio_lightning_over_plain']:.3f}x  (target >= {TARGET_RATIO}x)")
        if not args.skip_demo:
            label = "`python -m backbone_lab debug=tiny`" if args.dry_run else "`python -m backbone_lab` (make demo)"
            print(f"2. the shipped default end to end: {label}", flush=True)
            result["demo"] = bench_demo(args, tmp / "demo")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
