"""Golden regression: the first losses of a seeded tiny CPU run, stored in tests/assets.

Catches silent changes to data, tokenisation, probe construction, initialisation, loss or
optimizer. Regenerate deliberately with `python tests/test_golden_losses.py --write` (and say
why in the commit message).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import compose_config  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "assets" / "golden_losses_tiny.json"
N_STEPS = 8


def first_losses(cache_dir: Path) -> list[float]:
    from backbone_lab.data.datamodule import BackboneDataModule
    from backbone_lab.lit_module import BackboneLitModule
    from backbone_lab.train import build_model_config

    cfg = compose_config(["data.n_train_stories=400", "data.n_val_stories=40", "data.vocab_size=300",
                          "data.n_codewords=16", "data.micro_batch_size=8", "model.seq_len=64",
                          f"paths.cache_dir={cache_dir}"])
    dm = BackboneDataModule(**OmegaConf.to_container(cfg.data, resolve=True), seq_len=64, seed=int(cfg.seed))
    dm.setup("fit")
    torch.manual_seed(int(cfg.seed))
    module = BackboneLitModule(build_model_config(cfg.model, dm.vocab_size), instantiate(cfg.optimizer),
                               lambda_schedule=[[0, 2.0]], warmup=4, total_steps=N_STEPS)
    opt = module.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    losses = []
    for step, batch in zip(range(N_STEPS), dm.train_dataloader()):
        loss = module.loss_parts(batch, 2.0).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    return losses


def test_first_losses_match_golden(tmp_path):
    if not GOLDEN.exists():
        pytest.fail(f"{GOLDEN} missing: run `python {__file__} --write`")
    expected = json.loads(GOLDEN.read_text())["losses"]
    got = first_losses(tmp_path / "cache")
    assert got == pytest.approx(expected, rel=1e-4), f"losses changed: {got}"
    assert got[-1] < got[0]


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        losses = first_losses(Path(tmp))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"n_steps": N_STEPS, "losses": losses}, indent=1) + "\n")
    print(losses)
