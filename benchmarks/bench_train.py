"""Training benchmarks (issue: foundation). Not a test: prints figures and ratios.

1. The default demo (`python -m backbone_lab`, embedded CPU default, W&B offline): wall time and
   peak RSS of the whole job (training + snapshots + analysis + report), in a subprocess.
2. Training throughput of `BackboneLitModule` under a Lightning `Trainer` vs a plain PyTorch
   loop on the same model, batches, optimizer, schedule and clipping, measured in the same run,
   printed as a ratio (target >= 0.9x).

    python benchmarks/bench_train.py [--steps 300] [--skip-demo]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_demo(out_root: Path) -> tuple[float, float]:
    env = dict(os.environ, BACKBONE_LAB_OUTPUT=str(out_root), WANDB_SILENT="true")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "backbone_lab", "callbacks=none"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit("demo failed")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, peak_mb


def _datamodule(cache: Path):

    from backbone_lab.config_schema import register_configs
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(config_name="config", overrides=[f"paths.cache_dir={cache}"])
    from backbone_lab.data.datamodule import BackboneDataModule

    from backbone_lab.config_schema import build

    dm = BackboneDataModule(build("data", cfg.data), seq_len=int(cfg.model.seq_len), seed=int(cfg.seed))
    dm.setup("fit")
    return cfg, dm


def bench_throughput(steps: int, cache: Path) -> tuple[float, float]:
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from backbone_lab.lit_module import BackboneLitModule
    from backbone_lab.train import typed

    cfg, dm = _datamodule(cache)
    conf = typed(cfg)
    model_cfg = conf["model"].with_vocab(dm.vocab_size)
    conf["train"].max_steps = steps

    def make_module():
        torch.manual_seed(0)
        return BackboneLitModule(model_cfg, instantiate(cfg.optimizer), conf["schedule"], conf["objective"], conf["train"])

    # warm-up + batch list shared by both loops (data loading excluded from both timings)
    loader = dm.train_dataloader()
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == steps:
            break

    def plain_loop() -> float:
        module = make_module()
        opt_cfg = module.configure_optimizers()
        optimizer, scheduler = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
        module.train()
        t0 = time.perf_counter()
        for batch in batches:
            loss = module.loss_parts(batch, 2.0).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
        return steps / (time.perf_counter() - t0)

    # plain loop before and after the Lightning run (warm caches, fair to the baseline): best of both
    plain_first = plain_loop()

    # Lightning on the same batches
    module = make_module()
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0,
                        limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu")
    t0 = time.perf_counter()
    # batch_size=None: the loader hands out the pre-built batches as they are
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    lit = steps / (time.perf_counter() - t0)
    plain = max(plain_first, plain_loop())
    return plain, lit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain, lit = bench_throughput(args.steps, tmp / "cache")
        print(f"training throughput, tiny default, {args.steps} steps (steps/s):")
        print(f"  plain PyTorch loop : {plain:8.2f}  (best of two runs, before and after)")
        print(f"  Lightning module   : {lit:8.2f}")
        print(f"  ratio Lightning/plain = {lit / plain:.3f}x  (target >= 0.9x)")
        if not args.skip_demo:
            wall, peak = bench_demo(tmp / "out")
            print(f"default demo (train 1000 steps + snapshots + analysis + report): "
                  f"wall {wall:.1f} s, peak RSS {peak:.0f} MB  (target <= 120 s)")


if __name__ == "__main__":
    main()
