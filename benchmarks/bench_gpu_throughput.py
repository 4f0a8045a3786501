"""GPU throughput of the paper model (51M, 8 x 512, seq 256): fp32 vs bf16 autocast (SDPA/flash).

Not a test. Needs a CUDA device; on a CPU-only machine it says so and exits 0.
Prints tokens/s per precision and the bf16/fp32 ratio, measured in the same run on random
tokens with the composite loss, AdamW, micro-batch 64 (the paper's), grad clipping.

    python benchmarks/bench_gpu_throughput.py [--steps 50] [--batch 64] [--compile]
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbone_lab.config_schema import load_option  # noqa: E402
from backbone_lab.optim import parameter_groups_by_kind  # noqa: E402
from backbone_lab.model import GPT  # noqa: E402
from backbone_lab.objective import composite_loss  # noqa: E402


def run(precision: str, steps: int, batch: int, compile_model: bool) -> tuple[float, float]:
    torch.manual_seed(0)
    cfg = load_option("model", "paper").with_vocab(50257)
    model = GPT(cfg).cuda()
    opt = torch.optim.AdamW(parameter_groups_by_kind(model),
                            lr=1e-3, betas=(0.9, 0.95), weight_decay=0.5, fused=True)
    fwd = torch.compile(model) if compile_model else model
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), device="cuda")
    y = torch.randint(0, cfg.vocab_size, (batch, cfg.seq_len), device="cuda")
    probe = torch.zeros_like(y, dtype=torch.bool)
    probe[:, -3:] = True
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 10):
        if i == 10:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with ctx:
            loss = composite_loss(fwd(x), y, probe, 2.0).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return steps * batch * cfg.seq_len / seconds, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU throughput benchmark needs one (skipped)")
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    results = {}
    for precision in ("fp32", "bf16"):
        tps, mem = run(precision, args.steps, args.batch, args.compile)
        results[precision] = tps
        print(f"  {precision:5s}: {tps:12,.0f} tokens/s  ({tps / (args.batch * 256):6.2f} micro-batches/s), "
              f"peak {mem:.1f} GiB")
    print(f"  bf16 / fp32 = {results['bf16'] / results['fp32']:.2f}x")


if __name__ == "__main__":
    main()
