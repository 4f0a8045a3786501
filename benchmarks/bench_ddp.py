"""Data-parallel benchmark (not a timed test): throughput of W ranks vs one process at the same
global batch, and the time to write trunk snapshots by rank 0 alone vs sliced over the ranks.

    python benchmarks/bench_ddp.py                 # CPU: 2 gloo ranks vs 1 process, snapshot writes
    python benchmarks/bench_ddp.py --gpus 4        # a multi-GPU node: scaling efficiency 1 -> 4 GPUs
    python benchmarks/bench_ddp.py --dry-run       # seconds: every code path once, tiny sizes

1. **Throughput.** Interleaved rounds of (a) one process with micro-batch b accumulated W times
   and (b) W ranks with micro-batch b (`trainer=ddp_cpu`, or `trainer=ddp` on GPUs): the same
   global batch and the same trajectory (tests/test_distributed.py). Each run is the CLI end to
   end (`logger=none`, no analysis); the figure is samples/s of `trainer.fit` as the run reports it
   (`train_seconds` in its DONE marker). Printed: median and min–max per variant, and the ratio
   (b)/(a) with its spread; on GPUs the scaling efficiency (b)/(W·single GPU), goal >= 0.9.
2. **Snapshot writes.** Paper-trunk-sized snapshots (25,165,824 fp32 = 100.7 MB by default) written
   with `TrajectoryWriter` (atomic, crc, fsync) by one process, vs W processes each writing its
   1/W slice at the same time — the two modes of `snapshots.sliced`. Interleaved rounds, median
   and spread of seconds per snapshot.

On a 2-core CPU machine the throughput ratio measures the cost of the collective (gloo) and of
splitting the cores, not a speed-up: there is nothing to gain from two processes on two cores
beyond what one process with two threads already uses.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _run_cli(out: Path, name: str, args: list[str], env: dict) -> float:
    """Run one training via the CLI; returns its samples/s of fit."""
    cmd = [sys.executable, "-m", "backbone_lab", "logger=none", "callbacks=none", "analyze=false",
           f"run_name={name}", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark run failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    done = json.loads((out / "runs" / name / "DONE").read_text())
    return float(done["train_seconds"])


def throughput(rounds: int, steps: int, micro: int, world: int, gpus: int, dry: bool, out: Path) -> dict:
    env = {**os.environ, "BACKBONE_LAB_OUTPUT": str(out), "WANDB_MODE": "disabled"}
    common = [f"train.max_steps={steps}", f"train.eval_every={steps}", f"train.ckpt_every={steps}",
              f"snapshots.every={steps}", f"data.micro_batch_size={micro}", "data.n_eval=32", "data.n_val=32"]
    if dry:
        common += ["debug=tiny", "logger=none"]
    if gpus:
        single = ["trainer=gpu", "trainer.devices=1"]
        multi = ["trainer=ddp", f"trainer.devices={world}"]
    else:
        single = ["trainer=cpu"]
        multi = ["trainer=ddp_cpu", f"trainer.devices={world}"]
    global_batch = micro * world
    rates: dict[str, list[float]] = {"one process, accumulate W": [], f"{world} ranks": []}
    for r in range(rounds):
        order = [("one process, accumulate W", single + [f"train.accumulate={world}"]), (f"{world} ranks", multi)]
        if r % 2:
            order.reverse()  # interleave: neither variant always runs first
        for label, args in order:
            seconds = _run_cli(out, f"tp{r}_{len(rates[label])}_{label[:3].strip()}", common + args, env)
            rates[label].append(steps * global_batch / seconds)
            print(f"  round {r + 1}/{rounds} {label:28s} {rates[label][-1]:9.1f} samples/s", flush=True)
    a, b = rates["one process, accumulate W"], rates[f"{world} ranks"]
    ratios = [y / x for x, y in zip(a, b)]
    return {"samples_per_s": {k: _stats(v) for k, v in rates.items()}, "ratio_ranks_over_single": _stats(ratios),
            "global_batch": global_batch, "steps": steps, "world": world, "gpus": gpus}


def _write_slice(path: str, layout: list[dict], rank: int, world: int, steps: list[int], start, q) -> None:
    import numpy as np

    from backbone_lab.trajectory import layout as L
    from backbone_lab.trajectory.store import TrajectoryWriter

    w = TrajectoryWriter(path, tensors=layout, rank=rank if world > 1 else 0, world_size=world)
    rng = np.random.default_rng(rank)
    pieces = {t["name"]: rng.standard_normal(L.local_shape(t, rank, world) if world > 1 else t["shape"],
                                             dtype=np.float32) for t in layout}
    start.wait()  # every writer has its data in memory before the clock starts
    times = []
    for s in steps:
        t0 = time.perf_counter()
        w.append(s, pieces)
        times.append(time.perf_counter() - t0)
    q.put(times)


def snapshot_writes(rounds: int, n_snapshots: int, world: int, n_blocks: int, d: int, tmp: Path) -> dict:
    layout = [{"name": f"blocks.{b}.{n}", "shape": list(shape), "block": b, "trunk": True}
              for b in range(n_blocks)
              for n, shape in (("attn.qkv.weight", (3 * d, d)), ("attn.out_proj.weight", (d, d)),
                               ("mlp.w_up.weight", (4 * d, d)), ("mlp.w_down.weight", (d, 4 * d)))]
    nbytes = sum(4 * t["shape"][0] * t["shape"][1] for t in layout)
    ctx = mp.get_context("spawn")
    per: dict[str, list[float]] = {"rank 0 writes all": [], f"{world} ranks write slices": []}
    for r in range(rounds):
        modes = [("rank 0 writes all", 1), (f"{world} ranks write slices", world)]
        if r % 2:
            modes.reverse()
        for label, w in modes:
            path = tmp / f"snap_{r}_{w}"
            q, start = ctx.Queue(), ctx.Barrier(w + 1)
            steps = list(range(n_snapshots))
            procs = [ctx.Process(target=_write_slice, args=(str(path), layout, rank, w, steps, start, q))
                     for rank in range(w)]
            for p in procs:
                p.start()
            start.wait()
            t0 = time.perf_counter()
            for _ in range(w):
                q.get()
            wall = time.perf_counter() - t0
            for p in procs:
                p.join()
            per[label].append(wall / n_snapshots)
            print(f"  round {r + 1}/{rounds} {label:28s} {per[label][-1]:7.3f} s/snapshot", flush=True)
            import shutil

            shutil.rmtree(path, ignore_errors=True)
    return {"seconds_per_snapshot": {k: _stats(v) for k, v in per.items()}, "snapshot_MB": nbytes / 1e6,
            "ratio_sliced_over_rank0": _stats([b / a for a, b in zip(per["rank 0 writes all"],
                                                                     per[f"{world} ranks write slices"])])}


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--micro", type=int, default=16, help="micro-batch per rank")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--gpus", type=int, default=0, help="measure on GPUs: W = this many (trainer=ddp)")
    ap.add_argument("--snapshots", type=int, default=3, help="snapshots per round in the write benchmark")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes, every path once (seconds)")
    args = ap.parse_args()
    if args.gpus:
        args.world = args.gpus
    if args.dry_run:
        args.rounds, args.steps, args.micro, args.snapshots = 2, 4, 4, 1
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        tmp = Path(tmp)
        print(f"throughput: one process (micro {args.micro} x accumulate {args.world}) vs {args.world} ranks "
              f"(micro {args.micro}), {args.steps} steps, {args.rounds} interleaved rounds", flush=True)
        tp = throughput(args.rounds, args.steps, args.micro, args.world, args.gpus, args.dry_run, tmp / "out")
        d, blocks = (64, 2) if args.dry_run else (512, 8)
        print(f"snapshot writes: {blocks} x 4 matrices of d={d} ({'paper trunk' if not args.dry_run else 'tiny'}), "
              f"{args.rounds} interleaved rounds", flush=True)
        sw = snapshot_writes(args.rounds, args.snapshots, args.world, blocks, d, tmp)
    print("\n== results ==")
    for k, v in tp["samples_per_s"].items():
        print(f"  {k:28s} samples/s median {v['median']:9.1f}  (min {v['min']:.1f}, max {v['max']:.1f})")
    r = tp["ratio_ranks_over_single"]
    name = "scaling efficiency" if args.gpus else "ratio ranks / one process"
    value = r["median"] / args.world if args.gpus else r["median"]
    print(f"  {name}: {value:.3f}  (ratio min {r['min']:.3f}, max {r['max']:.3f})"
          + ("  goal >= 0.9" if args.gpus else ""))
    for k, v in sw["seconds_per_snapshot"].items():
        print(f"  {k:28s} s/snapshot median {v['median']:7.3f}  (min {v['min']:.3f}, max {v['max']:.3f})  "
              f"[{sw['snapshot_MB']:.1f} MB each]")
    s = sw["ratio_sliced_over_rank0"]
    print(f"  sliced / rank 0 time: median {s['median']:.3f} (min {s['min']:.3f}, max {s['max']:.3f})")
    print(json.dumps({"throughput": tp, "snapshot_writes": sw}, default=float))


if __name__ == "__main__":
    main()
