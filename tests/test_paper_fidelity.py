"""The paper experiments reproduce the paper's protocol by default where our clean defaults differ:
EOS padding counts in the loss (PAPER_MAP §2.2) and per-block PCA covers each block with its LayerNorms
(Table 2's subset, PAPER_MAP §1.3), while the whole-trunk analyses stay trunk-only."""

from __future__ import annotations

import json

import pytest

from backbone_lab.train import train
from conftest import TINY_OVERRIDES, compose_config

PAPER_FAMILY = ["paper_baseline", "seeds", "sgd_controls", "beta2_sweep", "reheating"]


@pytest.mark.parametrize("experiment", PAPER_FAMILY)
def test_paper_experiments_count_padding_and_store_the_layernorms(experiment):
    cfg = compose_config([f"+experiment={experiment}", "init_from=/src"] if experiment == "reheating"
                         else [f"+experiment={experiment}"])
    assert cfg.data.mask_padding is False
    assert cfg.snapshots.subset == "blocks_with_ln"


def test_default_and_cpu_twins_keep_the_clean_loss():
    assert compose_config([]).data.mask_padding is True
    assert compose_config(["+experiment=beta2_sweep_tiny"]).snapshots.subset == "trunk"


def test_a_blocks_with_ln_store_gives_per_block_pca_with_the_norms(tmp_path):
    cfg = compose_config(TINY_OVERRIDES + [f"run_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
                                           "snapshots.subset=blocks_with_ln", "analysis.figures=false"])
    assert train(cfg)["status"] == "done"
    s = json.loads((tmp_path / "run" / "analysis" / "summary.json").read_text())
    d, layers = cfg.model.d_model, cfg.model.n_layer
    trunk_block = 3 * d * d + d * d + 2 * d * cfg.model.d_ff
    assert s["dim"] == layers * trunk_block                      # whole-trunk analyses: the trunk only
    blocks = s["per_block"]["blocks"]
    assert sorted(blocks) == [f"block{i}_ln" for i in range(layers)]
    assert all(b["dim"] == trunk_block + 4 * d for b in blocks.values())   # + ln1, ln2 weight and bias
    assert all(0 < b["pc1_pct"] <= 100 for b in blocks.values())
