"""Data layer, example side: probe templates/spans, padding masks, train/val/eval datasets, sampler."""

import logging
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from backbone_lab.data.codewords import select_codewords
from backbone_lab.data.config import DataConfig
from backbone_lab.data.corpus import load_corpus
from backbone_lab.data.examples import ProbeEvalSet, ResumableSampler, TrainExamples, ValExamples, collate
from backbone_lab.data.probe import (
    TEMPLATES, ProbeBank, fit_gap_range, locate_answer, make_eval_probe_example, make_lm_example,
    make_train_probe_example, pack_example,
)
from backbone_lab.data.token_store import build_token_store
from backbone_lab.data.tokenizer import load_or_train_bpe

SEQ = 128


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    corpus = load_corpus(DataConfig(source="synthetic", options=dict(n_train_stories=300, n_val_stories=30, synthetic_seed=5)))
    tok = load_or_train_bpe(corpus.train, 400, cache, n_pseudo_words=24)
    words = select_codewords(tok, 24, 42)
    return {
        "tok": tok, "words": words, "bank": ProbeBank(tok, words),
        "train": build_token_store(corpus.train, tok, cache), "val": build_token_store(corpus.val, tok, cache),
    }


def _answer_text(tok, ex):
    return tok.decode(ex["targets"][ex["probe_mask"]].tolist())


# ---------------------------------------------------------------- spans and templates
def test_answer_span_for_all_templates(env):
    tok, bank = env["tok"], env["bank"]
    assert len(TEMPLATES) == 5 and bank.n_templates == 5
    for t, (key_t, query_t) in enumerate(TEMPLATES):
        for c, word in enumerate(bank.codewords):
            it = bank.item(t, c)
            assert tok.decode(it.query.tolist()) == query_t.format(C=word)
            assert tok.decode(it.key.tolist()) == key_t.format(C=word)
            assert it.n_answer == 1  # codewords are single " WORD" tokens
            assert tok.decode(it.query[-it.n_answer:].tolist()) == " " + word


def test_locate_answer_multi_token_answer(env):
    tok = env["tok"]
    ids, n = locate_answer(tok, "What is the secret code? hippopotamus", "hippopotamus")
    assert n == len(tok.encode(" hippopotamus")) > 1
    assert tok.decode(ids[-n:]) == " hippopotamus"


# ---------------------------------------------------------------- packing / padding
def test_pack_example_shift_and_padding_semantics():
    toks = np.arange(10, 16)  # 6 real tokens, seq_len 8 -> L = 9
    on = pack_example(toks, 8, eos_id=0, mask_padding=True, answer_start=4, n_answer=2)
    off = pack_example(toks, 8, eos_id=0, mask_padding=False, answer_start=4, n_answer=2)
    assert on["input_ids"].tolist() == [10, 11, 12, 13, 14, 15, 0, 0]
    assert off["targets"].tolist() == [11, 12, 13, 14, 15, 0, 0, 0]  # legacy: EOS padding is a target
    assert on["targets"].tolist() == [11, 12, 13, 14, 15, -100, -100, -100]  # masked from 1st padded target
    assert on["probe_mask"].tolist() == [False, False, False, True, True, False, False, False]
    assert on["targets"][on["probe_mask"]].tolist() == [14, 15]
    full = pack_example(np.arange(9), 8, 0, True)
    assert (full["targets"] != -100).all()
    assert on["input_ids"].dtype == torch.int64 and on["probe_mask"].dtype == torch.bool


def test_lm_example_crop_and_pad(env):
    doc = np.arange(1000, dtype=np.int64)
    ex = make_lm_example(doc, SEQ, 0, np.random.default_rng(0))
    s = int(ex["input_ids"][0])
    assert ex["input_ids"].tolist() == list(range(s, s + SEQ)) and ex["targets"].tolist() == list(range(s + 1, s + SEQ + 1))
    first = make_lm_example(doc, SEQ, 0, None)
    assert first["input_ids"][0] == 0
    short = make_lm_example(np.arange(5, 25), SEQ, 0, None, mask_padding=True)
    assert (short["targets"][19:] == -100).all() and (short["targets"][:19] != -100).all()


def test_train_probe_example_structure(env):
    tok, bank, store = env["tok"], env["bank"], env["train"]
    n_ok = 0
    for i in range(40):
        doc = store.doc(i)
        for mask_padding in (True, False):
            ex = make_train_probe_example(doc, bank, np.random.default_rng([1, i]), SEQ, tok.eos_id, (5, 30), mask_padding)
            assert ex is not None
            ans = _answer_text(tok, ex).strip()
            assert ans in bank.codewords
            pos = ex["probe_mask"].nonzero().flatten().tolist()
            assert len(pos) == 1 and (ex["targets"][pos] != -100).all()
            # the key sentence with the same codeword comes earlier in the input
            before = tok.decode(ex["input_ids"][: pos[0] + 1].tolist())
            assert f" {ans}." in before  # key sentence
            assert any(before.endswith(q.replace(" {C}", "")) for _, q in TEMPLATES)  # query up to the answer
            if not mask_padding:
                assert (ex["targets"] != -100).all()
            n_ok += 1
    assert n_ok == 80


def test_train_probe_too_long_gap_falls_back(env):
    tok, bank = env["tok"], env["bank"]
    assert make_train_probe_example(env["train"].doc(0), bank, np.random.default_rng(0), SEQ, tok.eos_id, (200, 200)) is None


def test_eval_probe_example_and_gap_fit(env):
    tok, bank = env["tok"], env["bank"]
    (lo, hi), note = fit_gap_range((80, 200), SEQ, bank)
    fit = SEQ + 1 - 10 - bank.max_key_len - bank.max_query_len
    assert hi == fit and lo == round(80 * fit / 200) and lo > 30 and "scaled" in note
    assert fit_gap_range((5, 30), SEQ, bank) == ((5, 30), None)
    assert fit_gap_range((80, 200), 256, bank) == ((80, 200), None)
    assert fit_gap_range((80, 200), SEQ, bank, policy="clip")[0] == (80, fit)
    with pytest.raises(ValueError):
        fit_gap_range((80, 200), SEQ, bank, policy="error")
    pool = np.arange(100, 300)
    for g in (lo, hi):
        ex = make_eval_probe_example(bank, np.random.default_rng(g), SEQ, tok.eos_id, (g, g), pool)
        assert _answer_text(tok, ex).strip() in bank.codewords
        real = int((ex["targets"] != -100).sum()) + 1
        assert real <= SEQ + 1


# ---------------------------------------------------------------- datasets and sampler
def _train_set(env, seed=0, p_probe=0.5):
    return TrainExamples(env["train"], SEQ, codewords=env["words"], tokenizer=env["tok"], p_probe=p_probe, seed=seed)


def test_train_examples_pure_function_of_key(env):
    ds = _train_set(env)
    a, b = ds[(3, 17)], _train_set(env)[(3, 17)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    n_probe = sum(int(ds[(e, 5)]["probe_mask"].any()) for e in range(40))
    assert 5 < n_probe < 35  # the same story is a probe in some epochs and not in others
    assert ds[7] .keys() == a.keys() and torch.equal(ds[7]["input_ids"], ds[(0, 7)]["input_ids"])


def test_dataloader_workers_give_identical_batches(env):
    ds = _train_set(env)
    sampler = ResumableSampler(len(ds), seed=3, total=96)

    def batches(workers):
        dl = DataLoader(ds, batch_size=16, sampler=sampler, num_workers=workers, collate_fn=collate)
        return list(dl)

    b0, b2 = batches(0), batches(2)
    assert len(b0) == len(b2) == 6
    for x, y in zip(b0, b2):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert sum(int(b["probe_mask"].any(1).sum()) for b in b0) > 0


def test_resumable_sampler_tail_and_epochs():
    n = 10
    full = list(ResumableSampler(n, seed=5, total=35))
    assert list(ResumableSampler(n, seed=5, start=13, total=22)) == full[13:]
    assert len(ResumableSampler(n, seed=5, start=13, total=22)) == 22
    for e in range(3):  # each epoch is a permutation
        assert sorted(i for ep, i in full[e * n : (e + 1) * n] if ep == e) == list(range(n))
    assert [i for _, i in full[:n]] != [i for _, i in full[n : 2 * n]]
    assert list(ResumableSampler(n, seed=6, total=10)) != full[:10]
    with pytest.raises(TypeError):
        len(ResumableSampler(n, seed=5))
    it = iter(ResumableSampler(n, seed=5))
    assert [next(it) for _ in range(35)] == full


def test_val_examples_fixed(env):
    v = ValExamples(env["val"], SEQ, env["tok"].eos_id, n_val=10)
    assert len(v) == 10
    assert torch.equal(v[3]["input_ids"], ValExamples(env["val"], SEQ, env["tok"].eos_id, n_val=10)[3]["input_ids"])
    assert v[3]["input_ids"][: len(env["val"].doc(3))].tolist() == env["val"].doc(3)[:SEQ].tolist()
    r = ValExamples(env["val"], SEQ, env["tok"].eos_id, n_val=10, crop="random", seed=1)
    assert torch.equal(r[2]["targets"], r[2]["targets"])


def test_probe_eval_sets_fixed_and_seeded_only_by_eval_seed(env, caplog):
    tok, bank = env["tok"], env["bank"]

    def make(kind, eval_seed=11, n=20):
        return ProbeEvalSet(kind, n, bank, SEQ, tok.eos_id, tok.vocab_size, eval_seed=eval_seed)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the adjustment gap_policy asks for is an info line, not a warning
        with caplog.at_level(logging.INFO, logger="backbone_lab.data.examples"):
            ood = make("ood")
    assert "probe eval set 'ood': gap range [80, 200] does not fit" in caplog.text
    assert ood.adjustment and ood.gap_range[1] < 200
    ood2, ood3 = make("ood", n=30), make("ood", eval_seed=12)
    assert all(torch.equal(ood.data[k], ood2.data[k][:20]) for k in ood.data)  # example i depends on i only
    assert not torch.equal(ood3.data["input_ids"], ood.data["input_ids"])
    ind = make("in")
    assert ind.adjustment is None and ind.gap_range == (5, 30)
    assert not torch.equal(ind.data["input_ids"], ood.data["input_ids"])
    for i in range(len(ind)):
        ex = ind[i]
        assert _answer_text(tok, ex).strip() in bank.codewords
        assert int(ex["probe_mask"].sum()) == 1
    # fillers exclude EOS and codeword tokens
    fill = ind.data["input_ids"][:, :2]
    assert not set(fill.flatten().tolist()) & (set(bank.answer_token_ids) | {tok.eos_id})
    batch = collate([ind[0], ind[1]])
    assert batch["input_ids"].shape == (2, SEQ) and batch["probe_mask"].dtype == torch.bool
