"""Benchmarks of the in-training diagnostics (not a timed test; prints a table and JSON).

Two parts:

* `fisher` — the per-sample Fisher Rayleigh quotients q(v_k) for K directions on N sequences:
  the JVP estimator (`per_sample_directional_derivatives`, no per-sample gradient is built) vs the
  explicit one (`explicit_per_sample_grads` = vmap(grad), then G v). Time (median of repeats after
  a warm-up) and peak memory above the set-up baseline (CUDA: max_memory_allocated; CPU: peak RSS
  of a fresh subprocess per measurement) on the `tiny` and `small` presets. Needs only the model
  and the objective.
* `throughput` — training steps/s of the embedded default config without diagnostics, with the
  CPU twins' `callbacks=alignment`, and with all three diagnostics at their default cadences,
  in interleaved rounds in one invocation (needs `backbone_lab.train.train`); ratios to "off" per
  round, median [min–max]. Target: ratio ≥ 0.9.

    python benchmarks/bench_diagnostics.py fisher [--presets tiny small] [--n 32] [--k 13]
    python benchmarks/bench_diagnostics.py throughput [--steps 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ----------------------------------------------------------------------------- fisher part
def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fisher_worker(preset: str, estimator: str, n: int, k: int, repeats: int, device: str, vocab: int,
                  threads: int = 0, direction_chunk: int = 0) -> dict:
    import torch

    from backbone_lab import trunk
    from backbone_lab.diagnostics import fisher as fi
    from backbone_lab.config_schema import load_option
    from backbone_lab.model import GPT

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = load_option("model", preset).with_vocab(vocab)
    model = GPT(cfg).to(device)
    T = cfg.seq_len
    g = torch.Generator().manual_seed(1)
    batch = {
        "input_ids": torch.randint(0, vocab, (n, T), generator=g).to(device),
        "targets": torch.randint(0, vocab, (n, T), generator=g).to(device),
        "probe_mask": torch.zeros(n, T, dtype=torch.bool).to(device),
    }
    batch["probe_mask"][::4, -3:] = True
    D = trunk.subset_dim(model)
    V = torch.randn(k, D, generator=g).to(device)

    def run_jvp():
        return fi.rayleigh_per_sample(model, batch, V, 2.0, method="jvp", direction_chunk=direction_chunk or None)

    def run_explicit():
        G = fi.explicit_per_sample_grads(model, batch, 2.0)
        P = (G.double() @ V.double().T).T
        return fi.rayleigh_from_projections(P, V)

    fn = run_jvp if estimator == "jvp" else run_explicit
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = _rss_mib()
    q = fn()  # warm-up (also the peak-memory measurement on CPU: fresh process)
    sync()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    out = {
        "preset": preset, "estimator": estimator, "N": n, "K": k, "T": T, "D": D, "device": device,
        "time_s": sorted(times)[len(times) // 2], "q0": float(q[0]),
    }
    if device.startswith("cuda"):
        out["peak_mem_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        out["peak_mem_mib"] = peak_rss - base_rss
    return out


def bench_fisher(args) -> dict:
    results = []
    for preset in args.presets:
        row = {}
        for est in ("jvp", "explicit"):
            cmd = [sys.executable, __file__, "_fisher_worker", "--preset", preset, "--estimator", est,
                   "--n", str(args.n), "--k", str(args.k), "--repeats", str(args.repeats),
                   "--device", args.device, "--vocab", str(args.vocab), "--threads", str(args.threads),
                   "--direction-chunk", str(args.direction_chunk)]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if res.returncode:
                print(res.stderr, file=sys.stderr)
                raise SystemExit(f"worker failed: {' '.join(cmd)}")
            row[est] = json.loads(res.stdout.strip().splitlines()[-1])
        j, e = row["jvp"], row["explicit"]
        summary = {
            "preset": preset, "D": j["D"], "N": j["N"], "K": j["K"], "T": j["T"], "device": j["device"],
            "jvp_direction_chunk": args.direction_chunk or j["K"],
            "jvp_time_s": j["time_s"], "explicit_time_s": e["time_s"],
            "time_ratio_jvp_over_explicit": j["time_s"] / e["time_s"],
            "jvp_peak_mib": j["peak_mem_mib"], "explicit_peak_mib": e["peak_mem_mib"],
            "mem_ratio_jvp_over_explicit": j["peak_mem_mib"] / max(e["peak_mem_mib"], 1e-9),
            "q_rel_diff": abs(j["q0"] - e["q0"]) / abs(e["q0"]),
        }
        results.append(summary)
        print(f"[{preset}] D={summary['D']:,} N={summary['N']} K={summary['K']} T={summary['T']} "
              f"JVP chunk={summary['jvp_direction_chunk']} ({summary['device']}): "
              f"JVP {summary['jvp_time_s']:.3f}s / {summary['jvp_peak_mib']:.0f} MiB, "
              f"explicit {summary['explicit_time_s']:.3f}s / {summary['explicit_peak_mib']:.0f} MiB -> "
              f"time x{summary['time_ratio_jvp_over_explicit']:.2f}, memory x{summary['mem_ratio_jvp_over_explicit']:.2f}, "
              f"|Δq|/q = {summary['q_rel_diff']:.1e}", flush=True)
    return {"fisher": results}


# ----------------------------------------------------------------------------- throughput part
def _run_train(overrides: list[str], run_dir: Path) -> float:
    """Train once; returns optimizer steps per second over `trainer.fit` (result["train_seconds"])."""
    from hydra import compose, initialize_config_dir

    from backbone_lab.config_schema import register_configs
    from backbone_lab.train import train

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides + [f"run_dir={run_dir}"])
    t0 = time.perf_counter()
    result = train(cfg)
    # fit time only (data set-up excluded; evaluation and snapshots are in both variants)
    seconds = result.get("train_seconds") or (time.perf_counter() - t0)
    return cfg.train.max_steps / seconds, seconds, _diagnostics_seconds(run_dir)


def _diagnostics_seconds(run_dir: Path) -> float:
    """Wall time the callbacks spent measuring (sum of the CSVs' `seconds` column)."""
    from backbone_lab.analysis.diagnostic_records import read_records

    total = 0.0
    for f in sorted((run_dir / "diagnostics").glob("*.csv")):
        r = read_records(f)
        if "seconds" in r:
            total += float(np.nansum(r["seconds"]))
    return total


def bench_throughput(args) -> dict:
    """Interleaved rounds of the embedded default without diagnostics, with the CPU twins'
    `callbacks=alignment` (gradient + update alignment, sparse) and with all three diagnostics
    at their default cadences; steps/s median [min–max] and the per-round ratios to "off"."""
    base = [f"train.max_steps={args.steps}", "logger=none", "analyze=false", f"seed={args.seed}"]
    variants = {"off": base + ["callbacks=none"],
                "alignment": base + ["callbacks=alignment"],
                "all three": base + ["callbacks=[grad_alignment,update_alignment,fisher]"]}
    rates: dict[str, list[float]] = {k: [] for k in variants}
    fit_s: dict[str, list[float]] = {k: [] for k in variants}
    diag_s: dict[str, list[float]] = {k: [] for k in variants}
    with tempfile.TemporaryDirectory(prefix="bench_diag_") as tmp:
        for r in range(args.repeats):  # interleaved (and rotated) so drift in machine load hits every variant
            names = list(variants)
            names = names[r % len(names):] + names[: r % len(names)]
            for name in names:
                run_dir = Path(tmp) / f"{name.replace(' ', '_')}_{r}"
                rate, secs, dsec = _run_train(variants[name], run_dir)
                rates[name].append(rate)
                fit_s[name].append(secs)
                diag_s[name].append(dsec)
                print(f"  round {r + 1}/{args.repeats} {name:10s}: {rate:.2f} steps/s"
                      + (f" ({dsec:.1f} s inside the diagnostics)" if name != "off" else ""), flush=True)
    out = {"steps": args.steps, "rates": rates, "fit_seconds": fit_s, "diagnostics_seconds": diag_s}
    for name in ("alignment", "all three"):
        ratios = [on / off for on, off in zip(rates[name], rates["off"])]
        own = [1 - d / f for f, d in zip(fit_s[name], diag_s[name])]  # load-robust: time not in the callbacks
        out[name] = {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                     "ratio_from_callback_time": statistics.median(own)}
        print(f"{name:10s}: {statistics.median(rates[name]):.2f} steps/s vs off {statistics.median(rates['off']):.2f}; "
              f"ratio median {out[name]['ratio_median']:.3f} [{min(ratios):.3f}–{max(ratios):.3f}] (target >= 0.9); "
              f"from the callbacks' own time {out[name]['ratio_from_callback_time']:.3f}")
    return {"throughput": out}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    f = sub.add_parser("fisher")
    f.add_argument("--presets", nargs="+", default=["tiny", "small"])
    f.add_argument("--n", type=int, default=32, help="sequences (per-sample Fisher N)")
    f.add_argument("--k", type=int, default=13, help="directions: backbone, PC2, switching + 10 random")
    f.add_argument("--repeats", type=int, default=3)
    f.add_argument("--device", default="cpu")
    f.add_argument("--vocab", type=int, default=512, help="the embedded default's BPE vocabulary")
    f.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    f.add_argument("--direction-chunk", type=int, default=0, help="JVP: directions per vmap (0 = all K)")
    f.add_argument("--json", type=Path, default=None, help="also write the results here")
    w = sub.add_parser("_fisher_worker")
    for a, t in (("--preset", str), ("--estimator", str), ("--n", int), ("--k", int), ("--repeats", int),
                 ("--device", str), ("--vocab", int), ("--threads", int), ("--direction-chunk", int)):
        w.add_argument(a, type=t, required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--steps", type=int, default=1000, help="the embedded default runs 1000 steps")
    t.add_argument("--repeats", type=int, default=2)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.part == "_fisher_worker":
        print(json.dumps(fisher_worker(args.preset, args.estimator, args.n, args.k, args.repeats, args.device, args.vocab,
                                        args.threads, args.direction_chunk)))
        return
    out = bench_fisher(args) if args.part == "fisher" else bench_throughput(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
