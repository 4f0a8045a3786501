"""Data layer glue: BackboneDataModule (build, resume, run files) and the evaluation passes."""

import itertools
import json
import logging
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backbone_lab.data.config import DataConfig
from backbone_lab.data.datamodule import BackboneDataModule
from backbone_lab.data.errors import DataError
from backbone_lab.data.evaluation import evaluate_lm, evaluate_probe
from backbone_lab.data.examples import collate


SMALL = dict(options=dict(n_train_stories=200, n_val_stories=20), vocab_size=400, seq_len=128, micro_batch_size=4,
             n_codewords=16, n_eval=24, n_val=8, p_probe=0.3, gap_ood=[40, 60], seed=3)


def make_dm(seq_len: int = 128, seed: int = 0, **data) -> BackboneDataModule:
    """A data module from DataConfig fields plus the model's seq_len and the run seed."""
    return BackboneDataModule(DataConfig(**data), seq_len=seq_len, seed=seed)


@pytest.fixture(scope="module")
def dm(tmp_path_factory):
    m = make_dm(**SMALL, cache_dir=str(tmp_path_factory.mktemp("cache")))
    m.setup("fit")
    return m


def test_datamodule_builds_everything(dm):
    assert dm.vocab_size == 400 and dm.eos_id == dm.tokenizer.eos_id
    s = dm.summary()
    assert s["train_docs"] == 200 and s["n_codewords"] == 16 and s["gap_ood"] == [40, 60] and not s["gap_adjustments"]
    b = next(iter(dm.train_dataloader()))
    assert set(b) == {"input_ids", "targets", "probe_mask"}
    assert b["input_ids"].shape == (4, 128) and b["input_ids"].dtype == torch.int64
    for kind in ("in", "ood"):
        pb = next(iter(dm.probe_eval_loader(kind, batch_size=8)))
        assert pb["probe_mask"].sum(1).tolist() == [1] * 8
    assert sum(len(x["input_ids"]) for x in dm.val_loader()) == 8


def test_datamodule_accepts_hydra_node_and_rebuilds_from_cache(dm):
    cfg = dict(SMALL, gap_train=[5, 30], gap_ood=[40, 60], cache_dir=str(dm.cache_dir))
    m2 = make_dm(**cfg)
    m2.setup()
    assert m2.codewords == dm.codewords and m2.train_store.path == dm.train_store.path
    assert torch.equal(m2.probe_sets["ood"].data["input_ids"], dm.probe_sets["ood"].data["input_ids"])
    # eval sets do not depend on the run seed, only on eval_seed
    m3 = make_dm(**dict(cfg, seed=99))
    m3.setup()
    assert torch.equal(m3.probe_sets["in"].data["input_ids"], dm.probe_sets["in"].data["input_ids"])
    assert not torch.equal(next(iter(m3.train_dataloader()))["input_ids"], next(iter(dm.train_dataloader()))["input_ids"])


def test_resume_continues_the_exact_stream(dm):
    accumulate, steps_done = 2, 3
    dm.set_start_step(0, accumulate)
    full = list(itertools.islice(iter(dm.train_dataloader()), 10))
    dm.set_start_step(steps_done, accumulate, max_steps=5)
    assert dm.start_sample == steps_done * accumulate * dm.micro_batch_size
    resumed = list(dm.train_dataloader())
    assert len(resumed) == (5 - steps_done) * accumulate
    for a, b in zip(full[steps_done * accumulate :], resumed):
        assert all(torch.equal(a[k], b[k]) for k in a)
    dm.set_start_step(0, 1)


def test_save_run_files_and_mismatch(dm, tmp_path):
    dm.save_run_files(tmp_path)
    doc = json.loads((tmp_path / "codewords.json").read_text())
    assert doc["codewords"] == dm.codewords and doc["count"] == 16
    dm.save_run_files(tmp_path)  # same list again (resume): fine
    other = make_dm(**dict(SMALL, codeword_seed=7), cache_dir=str(dm.cache_dir))
    other.setup()
    with pytest.raises(DataError, match="different codeword list"):
        other.save_run_files(tmp_path)


def test_datamodule_local_files(tmp_path, caplog):
    from backbone_lab.data.write_corpus import write_corpus

    sample = write_corpus(tmp_path / "stories.txt", 1200, seed=1)  # what `data=local` reads
    m = make_dm(source="local", options=dict(train_files=[str(sample)]), vocab_size=600, seq_len=128,
                           n_codewords=16, n_eval=8, n_val=8, cache_dir=str(tmp_path))
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="backbone_lab.data.examples"):
        warnings.simplefilter("error")  # the default gaps at the default seq_len: no warning, one info line
        m.setup()
    assert "gap range [80, 200] does not fit seq_len=128" in caplog.text and "scaled to" in caplog.text
    assert m.train_store.n_docs > 400 and m.vocab_size == 600
    assert next(iter(m.train_dataloader()))["input_ids"].shape == (32, 128)


def test_short_seq_len_records_gap_adjustments(dm):
    m = make_dm(**dict(SMALL, seq_len=64, gap_ood=[80, 200]), cache_dir=str(dm.cache_dir))
    with pytest.warns(UserWarning):
        m.setup()
    notes = m.summary()["gap_adjustments"]
    assert any("scaled" in n for n in notes) and m.gap_overlap and "not OOD" in notes[-1]
    fit = 65 - 10 - m.bank.max_key_len - m.bank.max_query_len
    assert m.probe_sets["ood"].gap_range[1] == fit


def test_bad_config_values_are_clear(tmp_path):
    with pytest.raises(ValueError, match="data.tokenizer='wordpiece' is not one of bpe | pretrained"):
        DataConfig(tokenizer="wordpiece")
    with pytest.raises(ValueError, match="data.micro_batch_size must be >= 1"):
        DataConfig(micro_batch_size=0)
    m = make_dm(**dict(SMALL, n_codewords=500), cache_dir=str(tmp_path))
    with pytest.raises(DataError, match="n_codewords"):
        m.setup()


# ---------------------------------------------------------------- evaluation
class TinyLM(nn.Module):
    """Stand-in for the GPT: embedding + linear, logits (B, T, V)."""

    def __init__(self, vocab, d=16):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.head = nn.Embedding(vocab, d), nn.Linear(d, vocab)

    def forward(self, idx):
        return self.head(self.emb(idx))


class Oracle(nn.Module):
    """'Cheats': looks up the true targets of each input row and puts almost all mass on them."""

    def __init__(self, dataset, vocab, wrong=()):
        super().__init__()
        self.table = {tuple(ex["input_ids"].tolist()): ex["targets"] for ex in dataset}
        for i in wrong:  # predict token+1 everywhere on these examples
            ex = dataset[i]
            self.table[tuple(ex["input_ids"].tolist())] = (ex["targets"] + 1) % vocab
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        y = torch.stack([self.table[tuple(r.tolist())] for r in idx]).clamp_min(0)
        return F.one_hot(y, self.vocab).float() * 30.0


@torch.no_grad()
def _direct(model, ds):
    b = collate([ds[i] for i in range(len(ds))])
    logits = model(b["input_ids"])
    ce = F.cross_entropy(logits.flatten(0, 1), b["targets"].flatten(), ignore_index=-100, reduction="none").view_as(b["targets"])
    m, y = b["probe_mask"], b["targets"]
    ok = [bool((logits[i].argmax(-1)[m[i]] == y[i][m[i]]).all()) for i in range(len(y)) if m[i].any()]
    lm = ~m & (y != -100)
    return sum(ok) / max(len(ok), 1), float(ce[m].mean()), float(ce[lm].mean()), float(ce[y != -100].mean())


def test_evaluate_probe_oracle_and_direct(dm):
    ds = dm.probe_sets["ood"]
    oracle = Oracle(ds, dm.vocab_size)
    r = evaluate_probe(oracle, dm.probe_eval_loader("ood", batch_size=5), "cpu")
    assert r["acc"] == 1.0 and r["n"] == len(ds) and r["nll"] < 1e-6 and r["lm_nll"] < 1e-6
    half = evaluate_probe(Oracle(ds, dm.vocab_size, wrong=range(0, len(ds), 3)), dm.probe_eval_loader("ood"), "cpu")
    assert half["acc"] == pytest.approx(1 - len(range(0, len(ds), 3)) / len(ds)) and half["nll"] > 1
    model = TinyLM(dm.vocab_size).train()
    acc, nll, lm, _ = _direct(model, ds)
    r = evaluate_probe(model, dm.probe_eval_loader("ood", batch_size=7), "cpu")
    assert model.training  # mode restored
    assert r["acc"] == pytest.approx(acc) and r["nll"] == pytest.approx(nll, rel=1e-5)
    assert r["lm_nll"] == pytest.approx(lm, rel=1e-5)


def test_evaluate_lm_direct(dm):
    model = TinyLM(dm.vocab_size).eval()
    *_, full = _direct(model, dm.val_set)
    assert evaluate_lm(model, dm.val_loader(batch_size=3), "cpu") == pytest.approx(full, rel=1e-5)
    assert not model.training
    first = collate([dm.val_set[i] for i in range(3)])
    with torch.no_grad():
        ce = F.cross_entropy(model(first["input_ids"]).flatten(0, 1), first["targets"].flatten(), ignore_index=-100)
    assert evaluate_lm(model, dm.val_loader(batch_size=3), "cpu", max_batches=1) == pytest.approx(float(ce), rel=1e-5)
