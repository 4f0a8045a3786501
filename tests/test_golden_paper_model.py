"""Golden regression of the paper preset itself (51,045,888 parameters, PAPER_MAP §1.2): the
initialisation and the first AdamW steps on fixed random tokens, recorded before any refactor of
the model file. Any change to module order, init, attention, MLP, norms or the tied head moves
these numbers. Regenerate only deliberately: `python tests/test_golden_paper_model.py --write`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

GOLDEN = Path(__file__).resolve().parent / "assets" / "golden_paper_model.json"
N_STEPS = 3


def paper_model():
    from omegaconf import OmegaConf

    from backbone_lab.model import GPT, ModelConfig

    fields = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "model" / "paper.yaml"))
    fields.pop("defaults", None)
    torch.manual_seed(1234)
    return GPT(ModelConfig(**{**fields, "vocab_size": 50257}))


def measure() -> dict:
    torch.use_deterministic_algorithms(True)
    model = paper_model()
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, 50257, (2, 257), generator=g)
    init_sum = float(sum(p.detach().double().sum() for p in model.parameters()))
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), weight_decay=0.5)
    losses = []
    for _ in range(N_STEPS):
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    return {"n_params": model.num_parameters(), "init_sum": init_sum, "losses": losses}


@pytest.mark.slow
def test_paper_preset_matches_golden():
    if not GOLDEN.exists():
        pytest.fail(f"{GOLDEN} missing: run `python {__file__} --write`")
    want = json.loads(GOLDEN.read_text())
    got = measure()
    assert got["n_params"] == want["n_params"] == 51_045_888
    assert got["init_sum"] == want["init_sum"]          # bit-identical initialisation
    assert got["losses"] == pytest.approx(want["losses"], rel=1e-6, abs=0)


if __name__ == "__main__" and "--write" in sys.argv:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    result = measure()
    GOLDEN.write_text(json.dumps(result, indent=1) + "\n")
    print(result)
