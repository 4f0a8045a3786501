"""Benchmark of the streamed Gram analysis against the reference's dense method (not a test).

Sizes (fp32 snapshots written with the public ``TrajectoryWriter`` API, steps 1, 200, …, 10000):

* (a) 51 × 3,145,728   — one paper block. Compared, each in its own subprocess (so wall time
  and peak RSS are separate), with the reference's method: float64 drift vectors stacked into a
  dense T×D matrix plus its row-normalised copy, ``np.linalg.svd`` of both.
* (b) 51 × 25,165,824  — the paper's whole trunk (~5 GB on disk); our engine only, full default
  analysis (PCA raw + row-norm, decomposition, rolling windows, phases, per-block Grams, update
  alignment, figures, report).

The synthetic trajectory is a drifting, slowly rotating backbone a(t)·v(t) plus a random-walk
residual with an oscillating component, generated snapshot by snapshot (never T×D in RAM).

Usage::

    python benchmarks/bench_analysis.py --size a|b|both [--dir DIR] [--keep]

Targets on 2 cores: (b) ≤ 30 s and ≤ 1 GB peak RSS; (a) ≥ 10× faster and ≥ 10× less peak
memory than the dense method. Timings are with the snapshot files in the OS page cache (they
were just written); peak RSS is ``ru_maxrss`` of each worker process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAPER_BLOCK = [("attn.qkv.weight", (1536, 512)), ("attn.out_proj.weight", (512, 512)),
               ("mlp.w_up.weight", (2048, 512)), ("mlp.w_down.weight", (512, 2048))]
STEPS = [1] + list(range(200, 10001, 200))  # 51 snapshots, as in the paper


def layout(n_blocks: int) -> list[tuple[str, tuple[int, int]]]:
    return [(f"blocks.{b}.{n}", s) for b in range(n_blocks) for n, s in PAPER_BLOCK]


def generate(path: Path, n_blocks: int, seed: int = 0) -> None:
    """Write the synthetic trajectory snapshot by snapshot (state: 4 float32 D-vectors)."""
    from backbone_lab.trajectory.store import TrajectoryWriter

    lay = layout(n_blocks)
    D = sum(int(np.prod(s)) for _, s in lay)
    rng = np.random.default_rng(seed)
    theta0 = (0.02 * rng.standard_normal(D, dtype=np.float32))
    v1 = rng.standard_normal(D, dtype=np.float32)
    v1 /= np.linalg.norm(v1)
    v2 = rng.standard_normal(D, dtype=np.float32)
    v2 -= (v2 @ v1) * v1
    v2 /= np.linalg.norm(v2)
    r = np.zeros(D, dtype=np.float32)
    out = np.empty(D, dtype=np.float32)
    w = TrajectoryWriter(path, meta={"synthetic": True, "seed": seed, "n_blocks": n_blocks})
    prev = STEPS[0]
    t0 = time.perf_counter()
    for s in STEPS:
        frac = s / STEPS[-1]
        a = 130.0 * frac**1.4 * (1.0 - 0.15 * max(0.0, frac - 0.6))   # grows, then slightly retreats
        phi = np.radians(70.0) * frac                                   # backbone rotates by 70°
        osc = 8.0 * np.sin(2 * np.pi * s / 1200.0)                     # p_ood-like switching
        dt = max(s - prev, 1)
        r += (0.6 * np.sqrt(dt / 200.0) / np.sqrt(D)) * 40 * rng.standard_normal(D, dtype=np.float32)
        np.multiply(v1, np.float32(a * np.cos(phi)), out=out)
        out += np.float32(a * np.sin(phi)) * v2
        out += r
        out += theta0
        out += np.float32(osc) * (v2 if s % 400 else -v2) * 0.1
        named, off = {}, 0
        for n, sh in lay:
            k = int(np.prod(sh))
            named[n] = out[off: off + k].reshape(sh)
            off += k
        w.append(s, named)
        prev = s
    print(f"  generated {len(STEPS)} x {D:,} fp32 at {path} in {time.perf_counter() - t0:.1f} s", flush=True)


# ----------------------------------------------------------------------------- workers
def worker_engine(store: Path, out: Path) -> dict:
    from backbone_lab.analysis.config import AnalysisConfig
    from backbone_lab.analysis.run_analysis import run_analysis

    t0 = time.perf_counter()
    s = run_analysis(store, AnalysisConfig(out_dir=str(out), anchor_step=1, corr_bootstrap=0, progress=False))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "gram_s": s["gram_stream_seconds"], "pc1_rownorm": s["pca"]["rownorm"]["pc1_pct"],
            "pc1_raw": s["pca"]["raw"]["pc1_pct"], "a_final": s["decomposition"]["a_final"], "dim": s["dim"],
            "rho_mean": s.get("rolling", {}).get("rho_mean")}


def worker_dense(store: Path, out: Path) -> dict:
    """The reference's method (backbone_decomposition.py / beta2_backbone_analysis.py)."""
    from backbone_lab.trajectory.store import TrajectoryReader

    r = TrajectoryReader(store)
    cols = r.subset_columns("trunk")
    t0 = time.perf_counter()
    steps = r.steps
    ref = steps[0]
    theta0 = r.load(ref)[cols[0].start: cols[-1].stop].astype(np.float64)
    deltas = {}
    for s in steps[1:]:
        deltas[s] = r.load(s)[cols[0].start: cols[-1].stop].astype(np.float64) - theta0
    X = np.stack([deltas[s] for s in steps[1:]], axis=0)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    X_rn = X / np.maximum(norms, 1e-12)
    U, S, Vt = np.linalg.svd(X_rn, full_matrices=False)
    _, S_raw, _ = np.linalg.svd(X, full_matrices=False)
    v_b = Vt[0] if X[-1] @ Vt[0] > 0 else -Vt[0]
    a = X @ v_b
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "pc1_rownorm": float(100 * S[0] ** 2 / np.sum(S**2)), "pc1_raw": float(100 * S_raw[0] ** 2 / np.sum(S_raw**2)),
            "a_final": float(a[-1]), "dim": int(X.shape[1])}


def run_worker(kind: str, store: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, "--worker", kind, "--store", str(store), "--out", str(out)],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if p.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["process_wall_s"] = time.perf_counter() - t0
    return res


def _gb(kb: float) -> str:
    return f"{kb / 1024 / 1024:.2f} GB"


def bench(size: str, root: Path, keep: bool) -> None:
    n_blocks = 1 if size == "a" else 8
    store = root / f"traj_{size}"
    if not (store / "manifest.json").exists():
        shutil.rmtree(store, ignore_errors=True)
        generate(store, n_blocks)
    else:
        print(f"  reusing {store}")
    out = root / f"analysis_{size}"
    print(f"\n== ({size}) {len(STEPS)} x {3_145_728 * n_blocks:,} fp32 ==")
    eng = run_worker("engine", store, out)
    rows = [("engine (full default analysis)", eng)]
    if size == "a":
        den = run_worker("dense", store, out)
        rows.append(("dense float64 + np.linalg.svd x2", den))
    print(f"{'method':36s} {'wall s':>8s} {'proc s':>8s} {'peak RSS':>10s} {'PC1 rn %':>9s} {'PC1 raw %':>9s} {'a(final)':>10s}")
    for name, r in rows:
        print(f"{name:36s} {r['wall_s']:8.2f} {r['process_wall_s']:8.2f} {_gb(r['maxrss_kb']):>10s} {r['pc1_rownorm']:9.3f} {r['pc1_raw']:9.3f} {r['a_final']:10.3f}")
    if size == "a":
        print(f"ratios dense/engine: wall {den['wall_s'] / eng['wall_s']:.1f}x (process {den['process_wall_s'] / eng['process_wall_s']:.1f}x), "
              f"peak RSS {den['maxrss_kb'] / eng['maxrss_kb']:.1f}x; |ΔPC1 rn| = {abs(den['pc1_rownorm'] - eng['pc1_rownorm']):.2e} pp, "
              f"|Δa(final)|/a = {abs(den['a_final'] - eng['a_final']) / abs(den['a_final']):.1e}")
    else:
        ok_t, ok_m = eng["wall_s"] <= 30, eng["maxrss_kb"] <= 1024 * 1024
        print(f"targets: wall <= 30 s: {'OK' if ok_t else 'MISSED'} ({eng['wall_s']:.1f} s, Gram stream {eng['gram_s']:.1f} s); "
              f"peak RSS <= 1 GB: {'OK' if ok_m else 'MISSED'} ({_gb(eng['maxrss_kb'])})")
    if not keep:
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=["a", "b", "both"], default="a")
    ap.add_argument("--dir", default=None, help="where to write the synthetic trajectories (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the generated trajectories")
    ap.add_argument("--worker", choices=["engine", "dense"], help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fn = worker_engine if args.worker == "engine" else worker_dense
        res = fn(Path(args.store), Path(args.out))
        res["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(res))
        return
    root = Path(args.dir) if args.dir else Path(tempfile.gettempdir()) / "backbone_lab_bench"
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free / 1e9
    need = {"a": 0.7, "b": 5.2, "both": 5.9}[args.size]
    print(f"bench dir {root}: {free:.0f} GB free, needs ~{need} GB; cores available: {len(os.sched_getaffinity(0))}")
    if free < need + 1:
        raise SystemExit("not enough disk space")
    for size in (["a", "b"] if args.size == "both" else [args.size]):
        bench(size, root, args.keep)
    if not args.keep and not any(root.iterdir()):
        root.rmdir()


if __name__ == "__main__":
    main()
