"""Import + analysis of a synthetic checkpoint series at growing trunk size: time, peak RSS, dense
vs sketched, and the disk's read bandwidth measured in the same run.

    python benchmarks/bench_series.py [--sizes 1e6,1e7] [--snapshots 32] [--sketch-dim 4096] [--dir /tmp]
    python benchmarks/bench_series.py --training-cost     # the sketch's cost on the training thread

Each size writes `snapshots` step<N>/model.safetensors folders (float32, GPT-NeoX trunk names, 8
blocks) into a temporary folder under --dir, deleted afterwards (--keep to keep it). Each
measurement runs in a fresh subprocess (peak RSS = its ru_maxrss). The read bandwidth is a cold
sequential read of the series files after dropping them from the page cache with
posix_fadvise(DONTNEED) (the same is done before each analysis), so "analysis vs disk" compares
like with like. Total disk = sizes × snapshots × 4 bytes (1e8 × 32 = 12.8 GB: only on an idle
machine with the space). Prints one table row per (size, mode) and a JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCKS = 8


def write_series(root: Path, D: int, T: int, seed: int = 0) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    d = D // BLOCKS
    rows = max(1, d // 1024)
    cols = d // rows
    theta = rng.standard_normal((BLOCKS, rows, cols), dtype=np.float32)
    v = rng.standard_normal((BLOCKS, rows, cols), dtype=np.float32)
    for t in range(T):
        folder = root / f"step{t * 100}"
        folder.mkdir(parents=True)
        cur = theta + np.float32(t / T) * v + rng.standard_normal(theta.shape, dtype=np.float32) * np.float32(0.01)
        save_file({f"gpt_neox.layers.{b}.mlp.dense_h_to_4h.weight": cur[b] for b in range(BLOCKS)}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text('{"architectures": ["GPTNeoXForCausalLM"]}')


def drop_cache(root: Path) -> None:
    for f in root.rglob("*.safetensors"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_bandwidth(root: Path) -> float:
    """Cold sequential read of every weight file, bytes per second."""
    drop_cache(root)
    total, t0 = 0, time.perf_counter()
    buf = bytearray(16 << 20)
    for f in sorted(root.rglob("*.safetensors")):
        with open(f, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                total += n
    return total / (time.perf_counter() - t0)


CHILD = r"""
import json, sys, time
def hwm():  # peak resident set (VmHWM, kB -> MB); ru_maxrss would include the forking parent's pages
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current RSS
from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.series.cli import SeriesOptions, analyse_series
base = hwm()
series, out, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
s = analyse_series(series, SeriesOptions(trunk="gpt_neox", sketch_dim=k), AnalysisConfig(out_dir=out, figures=False, report=False, progress=False))
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": hwm(), "import_rss_mb": base,
                  "gram_seconds": s["gram_stream_seconds"], "pc1": s["pca"]["rownorm"]["pc1_pct"]}))
"""


def training_cost(k: int, every: int = 25, repeats: int = 3) -> dict:
    """Seconds of one training step (forward, backward, AdamW) of the paper GPT at the tiny run's
    shape (seq_len 64, micro batch 8) on the CPU, of the host copy the training thread makes per
    snapshot (`copy_to_host`, async_write) and of one sketch of the trunk (the writer thread's
    `BlockSketcher.sketch_torch`), medians of `repeats`; ratios per snapshot and per step at
    snapshots.every = `every`."""
    import statistics

    import torch

    from backbone_lab.model import GPT, ModelConfig
    from backbone_lab.series.sketch import BlockSketcher, SketchSpec
    from backbone_lab.trajectory.background_writer import copy_to_host
    from backbone_lab.trunk import named_subset, subset_layout

    torch.manual_seed(0)
    model = GPT(ModelConfig(seq_len=64, vocab_size=300))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 300, (8, 64))
    step_s, sketch_s, copy_s = [], [], []
    sketcher = BlockSketcher(SketchSpec(k), subset_layout(model, "trunk"))
    for _ in range(repeats):
        t0 = time.perf_counter()
        logits = model(x)
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1)).backward()
        opt.step()
        opt.zero_grad()
        step_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        host, _ = copy_to_host(named_subset(model, "trunk"))  # what the training thread does (async_write)
        copy_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.no_grad():
            sketcher.sketch_torch(host)  # what the writer thread does
        sketch_s.append(time.perf_counter() - t0)
    st, sk, cp = statistics.median(step_s), statistics.median(sketch_s), statistics.median(copy_s)
    D = sum(p.numel() for p in named_subset(model, "trunk").values())
    return {"trunk_dim": D, "k": k, "step_seconds": st, "sketch_seconds": sk, "sketch_over_step": sk / st,
            "every": every, "per_step_fraction": sk / st / every,
            "training_thread_seconds": cp, "training_thread_over_step": cp / st, "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1e6,1e7")
    ap.add_argument("--snapshots", type=int, default=32)
    ap.add_argument("--sketch-dim", type=int, default=4096)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--modes", default="dense,sketched")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--training-cost", action="store_true", help="only measure the sketch's cost on the training thread")
    a = ap.parse_args()
    if a.training_cost:
        r = training_cost(a.sketch_dim)
        print(f"paper GPT trunk D={r['trunk_dim']:,}: step {r['step_seconds']:.2f} s, sketch (k={r['k']}) {r['sketch_seconds']:.2f} s "
              f"= {100 * r['sketch_over_step']:.0f} % of a step per snapshot ({100 * r['per_step_fraction']:.1f} % per step at "
              f"every={r['every']}), in the writer thread; on the training thread (host copy) {r['training_thread_seconds'] * 1e3:.0f} ms "
              f"= {100 * r['training_thread_over_step']:.1f} % of a step")
        print(json.dumps(r))
        return
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    results = []
    print(f"{'D':>12} {'mode':>8} {'GB read':>8} {'s':>8} {'peak RSS MB':>12} {'analysis MB/s':>14} {'disk MB/s':>10} {'ratio':>6} {'PC1 %':>7}")
    for D in (int(float(x)) for x in a.sizes.split(",")):
        need = D * a.snapshots * 4
        free = shutil.disk_usage(a.dir).free
        if need * 1.2 > free:
            print(f"skip D={D:.0e}: needs {need / 1e9:.1f} GB, {free / 1e9:.1f} GB free")
            continue
        root = Path(tempfile.mkdtemp(prefix="bench_series_", dir=a.dir))
        try:
            write_series(root / "series", D, a.snapshots)
            bw = read_bandwidth(root / "series")
            for mode, k in (m for m in (("dense", 0), ("sketched", a.sketch_dim)) if m[0] in a.modes.split(",")):
                drop_cache(root / "series")
                out = subprocess.run([sys.executable, "-c", CHILD, str(root / "series"), str(root / f"out_{mode}"), str(k)],
                                     env=env, capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rate = need / r["seconds"]
                row = {"D": D, "mode": mode, "k": k, "bytes": need, **r, "disk_bytes_per_s": bw, "analysis_bytes_per_s": rate}
                results.append(row)
                print(f"{D:>12,} {mode:>8} {need / 1e9:>8.2f} {r['seconds']:>8.1f} {r['peak_rss_mb']:>12.0f} {rate / 1e6:>14.0f} "
                      f"{bw / 1e6:>10.0f} {rate / bw:>6.2f} {r['pc1']:>7.2f}")
        finally:
            if not a.keep:
                shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
