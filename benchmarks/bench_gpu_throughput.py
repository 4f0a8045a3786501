"""GPU throughput of the paper model: the authors'-style loop vs our Lightning path, side by side.

Five variants in one process on the paper config (8 × 512, 16 heads, d_ff 2048, seq 256,
|V| = 50,257), the same random batches (micro-batch 64 × 256 tokens, 2 micro-batches per
optimizer step as in the paper, ~10 % probe rows), the same objective and clipping:

  a  authors' style — naive masked-softmax attention, fp32, AdamW(foreach=False), plain loop
     (benchmarks/authors_style.py, rebuilt from PAPER_MAP §1 and §3); the baseline of every ratio
  b  BackboneLitModule through a Lightning Trainer, fp32 with TF32 off (the paper's arithmetic)
  c  the same with TF32 matmuls on                     (labelled TF32: not fp32 arithmetic)
  d  the same in bf16-mixed                            (trainer=gpu, as shipped)
  e  bf16-mixed + train.compile=true                   (torch.compile of forward + loss)

Rounds are interleaved (a b c d e, a b c d e, ...); each run excludes its warm-up steps (and
with them compilation) from the timing. Per variant it prints tokens/s and step time (median
[min–max] over rounds), the peak memory of the timed steps, the MFU (see mfu.py: tokens/s ×
(6N + 12·L·T·d) / the device's peak dense bf16 FLOP/s, detected from its name or given with
--peak-tflops) and the ratio of median tokens/s against (a). Goals it checks: the bf16 path
>= 3x the authors'-style loop; MFU >= 35 % on an H100.

    python benchmarks/bench_gpu_throughput.py [--rounds 3] [--warmup 5] [--steps 20] [--json out.json]
    python benchmarks/bench_gpu_throughput.py --dry-run    # CPU, tiny model, 2 steps per variant

Without a CUDA device (and without --dry-run) it says so and exits 0. A variant that fails (out of
memory, a compile error) is a row with its error and the others go on (exit status 3); with --json
the file is rewritten (atomically) after every measurement, so it holds what ran so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import platform
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from authors_style import AuthorsLoop  # noqa: E402

from backbone_lab.durable import atomic_write_json  # noqa: E402
from mfu import flops_per_token, mfu, peak_tflops  # noqa: E402
from rounds import Failed, Spread, failure, interleaved, succeeded  # noqa: E402
from step_timer import StepTimer  # noqa: E402

PAPER_BATCH = 64          # sequences per micro-batch (PAPER_MAP §3)
PAPER_ACCUMULATE = 2      # micro-batches per optimizer step (PAPER_MAP §3)
GOAL_SPEEDUP = 3.0        # bf16 path vs the authors'-style loop
GOAL_MFU_H100 = 0.35
EXIT_SOME_FAILED = 3      # some variants failed; the others' figures are in the JSON


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    precision: str | None     # Lightning precision; None = the authors' loop
    tf32: bool | None         # True/False: set matmul + cuDNN TF32; None: torch's defaults (as shipped)
    compile: bool = False
    gpu_only: str = ""        # why it is skipped on a CPU dry run ("" = runs on CPU too)


VARIANTS = (
    Variant("a", "authors' style: naive attention, fp32, AdamW(foreach=False), plain loop", None, False),
    Variant("b", "Lightning, fp32 (TF32 off)", "32-true", False),
    Variant("c", "Lightning, TF32", "32-true", True, gpu_only="TF32 is a CUDA matmul mode"),
    Variant("d", "Lightning, bf16-mixed", "bf16-mixed", None),
    Variant("e", "Lightning, bf16-mixed + compile", "bf16-mixed", None, compile=True,
            gpu_only="torch.compile is measured on the GPU only"),
)


def set_tf32(enabled: bool | None) -> None:
    """TF32 for fp32 matmuls and cuDNN convolutions; None restores torch's defaults (matmul off,
    cuDNN on), which is what our shipped GPU path runs with."""
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = True if enabled is None else enabled


def random_batches(vocab: int, batch: int, seq_len: int, n: int, pin: bool) -> list[dict]:
    """`n` micro-batches in the data layer's format (docs/ARCHITECTURE.md): random tokens, ~10 %
    of the rows with a 2-token probe answer at the end (p_probe 0.10)."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        tokens = torch.randint(0, vocab, (batch, seq_len + 1), generator=g)
        probe = torch.zeros(batch, seq_len, dtype=torch.bool)
        probe[torch.rand(batch, generator=g) < 0.1, -2:] = True
        b = {"input_ids": tokens[:, :-1].contiguous(), "targets": tokens[:, 1:].contiguous(), "probe_mask": probe}
        out.append({k: v.pin_memory() for k, v in b.items()} if pin else b)
    return out


class _Cycle(torch.utils.data.Dataset):
    """The same few pre-built batches, handed out `length` times (batch_size=None loader)."""

    def __init__(self, batches: list[dict], length: int):
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        return self.batches[i % len(self.batches)]


class LightningRunner:
    """One `BackboneLitModule`, kept across rounds (a compiled forward is compiled once); each
    run is a fresh Trainer.fit of warmup + steps optimizer steps (Lightning moves the module to
    the CPU at the end of a fit, so variants do not share the GPU's memory)."""

    def __init__(self, variant: Variant, model_cfg, batches: list[dict], accumulate: int, device: torch.device):
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        from backbone_lab.config_schema import CONF_DIR, load_option
        from backbone_lab.lit_module import BackboneLitModule

        self.variant, self.batches, self.accumulate, self.device = variant, batches, accumulate, device
        loop = dataclasses.replace(load_option("train", "paper"), accumulate=accumulate, compile=variant.compile)
        optimizer = instantiate(OmegaConf.load(CONF_DIR / "optimizer" / "adamw.yaml"))  # the shipped AdamW
        torch.manual_seed(0)
        self.module = BackboneLitModule(model_cfg, optimizer, load_option("schedule", "paper"),
                                        load_option("objective", "paper"), loop)
        self.grad_clip = loop.grad_clip

    def run(self, warmup: int, steps: int) -> tuple[float, int | None, float]:
        import lightning as L

        timer = StepTimer(warmup, steps)
        loader = torch.utils.data.DataLoader(_Cycle(self.batches, (warmup + steps) * self.accumulate), batch_size=None)
        trainer = L.Trainer(
            accelerator="gpu" if self.device.type == "cuda" else "cpu", devices=1,
            precision=self.variant.precision, max_steps=warmup + steps,
            accumulate_grad_batches=self.accumulate, gradient_clip_val=self.grad_clip,
            gradient_clip_algorithm="norm", callbacks=[timer], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(self.module, train_dataloaders=loader)
        return timer.seconds, timer.peak_bytes, timer.warmup_seconds


def _quiet() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
                 "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def measure(args, on_update=None) -> dict:
    """Run every variant; returns the JSON-able result (also printed as a table).

    `on_update(result so far)` is called after every measurement of every variant (and once
    before the first): the caller saves it, so a crash or a kill later loses nothing measured.
    A variant that fails (out of memory, a compile error, ...) becomes a row with status
    "failed" and its error; the other variants keep their figures."""
    from backbone_lab.config_schema import load_option

    _quiet()
    cuda = torch.cuda.is_available() and not args.dry_run
    device = torch.device("cuda" if cuda else "cpu")
    if args.dry_run:
        cfg = dataclasses.replace(load_option("model", "tiny"), seq_len=64).with_vocab(512)
        batch, accumulate = 4, 2
    else:
        cfg = load_option("model", "paper").with_vocab(50257)
        batch, accumulate = args.batch, args.accumulate
    device_name = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    peak = peak_tflops(device_name, args.peak_tflops) if (cuda or args.peak_tflops) else None
    tokens_per_step = batch * cfg.seq_len * accumulate
    print(f"device: {device_name}, torch {torch.__version__}; model {cfg.name} "
          f"({cfg.n_layer} x {cfg.d_model}, seq {cfg.seq_len}, vocab {cfg.vocab_size}); "
          f"step = {accumulate} x {batch} x {cfg.seq_len} = {tokens_per_step:,} tokens", flush=True)
    print(f"FLOPs/token (6N + 12LTd) = {flops_per_token(cfg) / 1e6:.1f} M; peak dense bf16 = "
          f"{f'{peak:.0f} TFLOP/s' if peak else 'unknown (pass --peak-tflops)'}", flush=True)
    print(f"rounds {args.rounds} (interleaved), warm-up {args.warmup} + timed {args.steps} optimizer steps per run",
          flush=True)

    head = {"device": device_name, "torch": torch.__version__, "dry_run": bool(args.dry_run),
            "model": dataclasses.asdict(cfg), "tokens_per_step": tokens_per_step,
            "micro_batch": batch, "accumulate": accumulate,
            "flops_per_token": flops_per_token(cfg), "peak_tflops": peak, "rounds": args.rounds,
            "warmup_steps": args.warmup, "timed_steps": args.steps}
    batches = random_batches(cfg.vocab_size, batch, cfg.seq_len, n=4, pin=cuda)
    runners, skipped = {}, {}
    raw: dict[str, list] = {v.key: [] for v in VARIANTS}

    def snapshot(complete: bool) -> dict:
        result = {**head, "complete": complete,
                  "variants": variant_rows(raw, skipped, args.steps, tokens_per_step, cfg, peak)}
        result["goals"] = goals(result)
        return result

    def update() -> None:
        if on_update is not None:
            on_update(snapshot(complete=False))

    for v in VARIANTS:
        if v.gpu_only and not cuda:
            skipped[v.key] = f"skipped on CPU: {v.gpu_only}"
            continue
        try:
            runners[v.key] = (AuthorsLoop(cfg, batches, accumulate, device) if v.precision is None
                              else LightningRunner(v, cfg, batches, accumulate, device))
        except Exception as err:  # noqa: BLE001 - a variant that cannot be built is a row with its error
            raw[v.key].append(Failed.of(err, 0))
            print(f"  {v.key}: could not be built: {raw[v.key][-1].error}", flush=True)
    update()
    by_key = {v.key: v for v in VARIANTS}

    def measure_one(key: str):
        def run():
            set_tf32(by_key[key].tf32)
            try:
                seconds, peak_bytes, warm = runners[key].run(args.warmup, args.steps)
            finally:  # after an out-of-memory error too: the next variant starts with a clean device
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
            return {"seconds": seconds, "peak_bytes": peak_bytes, "warmup_seconds": warm}
        return run

    def progress(r: int, key: str, res) -> None:
        raw[key].append(res)
        if isinstance(res, Failed):
            print(f"  round {r}/{args.rounds}  {key}: FAILED {res.error} (not run again)", flush=True)
        else:
            tps = args.steps * tokens_per_step / res["seconds"]
            print(f"  round {r}/{args.rounds}  {key}: {tps:12,.0f} tokens/s  "
                  f"(warm-up {res['warmup_seconds']:.1f} s)", flush=True)
        update()

    interleaved({k: measure_one(k) for k in runners}, args.rounds, progress, record_failures=True)
    set_tf32(None)
    return snapshot(complete=True)


def variant_rows(raw: dict[str, list], skipped: dict[str, str], steps: int, tokens_per_step: int, cfg,
                 peak: float | None) -> list[dict]:
    """One row per variant from the measurements so far: status "ran" (with tokens/s, step time,
    memory, MFU, ratio against a), "failed" (its error, and the figures of the rounds before it,
    if any), "pending" (not measured yet) or "skipped on CPU: ..."."""
    rows = []
    for v in VARIANTS:
        row = {"key": v.key, "label": v.label, "precision": v.precision or "fp32 (plain loop)",
               "tf32": v.tf32, "compile": v.compile}
        if v.key in skipped:
            rows.append({**row, "status": skipped[v.key]})
            continue
        runs, failed = succeeded(raw[v.key]), failure(raw[v.key])
        if failed is not None:
            row.update(status="failed", error=failed.error, failed_in_round=failed.round,
                       traceback_tail=failed.traceback)
        elif not runs:
            rows.append({**row, "status": "pending"})
            continue
        else:
            row["status"] = "ran"
        if runs:
            tps = Spread.of([steps * tokens_per_step / r["seconds"] for r in runs])
            step_ms = Spread.of([1000 * r["seconds"] / steps for r in runs])
            peaks = [r["peak_bytes"] for r in runs if r["peak_bytes"] is not None]
            row.update(tokens_per_s=tps.as_dict(), step_ms=step_ms.as_dict(),
                       peak_mem_gib=max(peaks) / 2**30 if peaks else None,
                       mfu=mfu(tps.median, cfg, peak), first_warmup_s=runs[0]["warmup_seconds"])
        rows.append(row)
    base = next((r for r in rows if r["key"] == "a" and "tokens_per_s" in r), None)
    for r in rows:
        if "tokens_per_s" in r and base:
            r["ratio_vs_a"] = r["tokens_per_s"]["median"] / base["tokens_per_s"]["median"]
    return rows


def goals(result: dict) -> dict:
    ran = {r["key"]: r for r in result["variants"] if r["status"] == "ran"}
    bf16 = [ran[k] for k in ("d", "e") if k in ran]
    speedup = max((r.get("ratio_vs_a", 0.0) for r in bf16), default=None)
    best_mfu = max((r["mfu"] for r in bf16 if r["mfu"] is not None), default=None)
    h100 = "h100" in result["device"].lower()
    return {
        "bf16_speedup_vs_authors": speedup,
        "bf16_speedup_goal": GOAL_SPEEDUP,
        "bf16_speedup_met": None if speedup is None else speedup >= GOAL_SPEEDUP,
        "best_bf16_mfu": best_mfu,
        "mfu_goal_h100": GOAL_MFU_H100,
        "mfu_met": (best_mfu >= GOAL_MFU_H100) if (h100 and best_mfu is not None) else None,
    }


def print_table(result: dict) -> None:
    print(f"\nGPU throughput — {result['device']}, torch {result['torch']}"
          f"{' (DRY RUN: tiny model on CPU, numbers mean nothing)' if result['dry_run'] else ''}")
    header = ("", "variant", "tokens/s median [min–max]", "step ms", "peak GiB", "MFU %", "x vs a", "warm-up s")
    lines = [header]
    for r in result["variants"]:
        if "tokens_per_s" not in r:
            lines.append((r["key"], r["label"], r["status"].split(":")[0], "", "", "", "", ""))
            continue
        tps = r["tokens_per_s"]
        lines.append((r["key"], r["label"], f"{tps['median']:,.0f} [{tps['min']:,.0f}–{tps['max']:,.0f}]",
                      f"{r['step_ms']['median']:.1f}",
                      "—" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.1f}",
                      "—" if r["mfu"] is None else f"{100 * r['mfu']:.1f}",
                      f"{r.get('ratio_vs_a', float('nan')):.2f}", f"{r['first_warmup_s']:.1f}"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(line, widths)))
    for r in result["variants"]:
        if r["status"] == "failed":
            print(f"  {r['key']}: FAILED in round {r['failed_in_round']}: {r['error']}")
        elif r["status"] != "ran":
            print(f"  {r['key']}: {r['status']}")
    g = result["goals"]
    if result["dry_run"]:
        print("goals (bf16 >= 3x the authors' loop, MFU >= 35 % on an H100): not judged on a dry run")
    elif g["bf16_speedup_vs_authors"] is not None:
        verdict = "met" if g["bf16_speedup_met"] else "NOT met"
        print(f"goal: bf16 path >= {g['bf16_speedup_goal']:.0f}x the authors' loop: "
              f"{g['bf16_speedup_vs_authors']:.2f}x -> {verdict}")
    if result["dry_run"]:
        pass
    elif g["best_bf16_mfu"] is None:
        print("goal: MFU >= 35 % on an H100: not judged (peak unknown or no bf16 run)")
    elif g["mfu_met"] is None:
        print(f"goal: MFU >= 35 % on an H100: best bf16 MFU {100 * g['best_bf16_mfu']:.1f} % (not an H100: not judged)")
    else:
        print(f"goal: MFU >= 35 % on an H100: best bf16 MFU {100 * g['best_bf16_mfu']:.1f} % -> "
              f"{'met' if g['mfu_met'] else 'NOT met'}")
    print("warm-up s = first round's untimed warm-up (includes torch.compile for e); "
          "peak = max_memory_allocated over the timed steps")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3 for a spread)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps per run")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per run")
    parser.add_argument("--batch", type=int, default=PAPER_BATCH, help="sequences per micro-batch")
    parser.add_argument("--accumulate", type=int, default=PAPER_ACCUMULATE, help="micro-batches per optimizer step")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense bf16 TFLOP/s of the device (default: from its name, see mfu.py)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU smoke run: tiny model, 2 rounds of 1 + 2 steps; TF32 and compile skipped")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.rounds, args.warmup, args.steps = min(args.rounds, 2), 1, 2
    elif not torch.cuda.is_available():
        print("no CUDA device: the GPU throughput benchmark needs one (skipped; --dry-run runs it on CPU)")
        return 0
    save = None
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)

        def save(result: dict) -> None:  # rewritten after every measurement: a crash keeps what ran
            atomic_write_json(args.json, result, indent=2)
    result = measure(args, save)
    if save is not None:
        save(result)
    print_table(result)
    if args.json:
        print(f"results: {args.json}")
    failed = [r["key"] for r in result["variants"] if r["status"] == "failed"]
    if failed:
        print(f"failed variant(s): {', '.join(failed)} (their errors are in the table and the JSON)")
    return EXIT_SOME_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())
