"""Data layer, text side: synthetic stories, corpus loading, BPE tokenizer, token store, codewords."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backbone_lab.data.codewords import (
    codeword_candidates, codewords_sha256, load_codewords, save_codewords, select_codewords,
)
from backbone_lab.data.config import DataConfig
from backbone_lab.data.corpus import filter_texts, load_corpus
from backbone_lab.data.sources.local_files import load_local_texts
from backbone_lab.data.errors import DataError
from backbone_lab.data.synthetic import generate_stories, vocabulary
from backbone_lab.data.token_store import TokenStore, build_token_store
from backbone_lab.data.tokenizer import load_or_train_bpe, pseudo_words, texts_sha256

from backbone_lab.data.write_corpus import write_corpus


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A small synthetic corpus with a trained BPE (vocab 400, 32 pseudo-words) in a tmp cache."""
    cache = tmp_path_factory.mktemp("cache")
    corpus = load_corpus(DataConfig(source="synthetic", options=dict(n_train_stories=400, n_val_stories=40, synthetic_seed=3)))
    tok = load_or_train_bpe(corpus.train, 400, cache, n_pseudo_words=32, corpus_sha=corpus.train_sha256)
    return {"cache": cache, "corpus": corpus, "tok": tok}


# ---------------------------------------------------------------- synthetic / corpus
def test_synthetic_deterministic_varied_and_prefix_stable():
    a, b = generate_stories(300, seed=7), generate_stories(300, seed=7)
    assert a == b
    assert len(set(a)) == 300  # stories differ
    assert generate_stories(300, seed=8) != a
    assert generate_stories(50, seed=7) == a[:50]
    n_sent = [s.count(".") + s.count("!") + s.count("?") for s in a]
    assert min(n_sent) >= 3
    assert 300 <= len(vocabulary()) <= 500


def test_filter_texts_rules():
    texts = ["", "   \n", "short text", "x" * 40, "y" * 39, "z" * 100]
    assert filter_texts(texts) == ["x" * 40, "z" * 100]
    assert filter_texts(texts, max_texts=4) == ["x" * 40]  # first records, then filters (PAPER_MAP §2.1)


def test_synthetic_corpus_split_and_hash():
    c = load_corpus(DataConfig(source="synthetic", options=dict(n_train_stories=100, n_val_stories=10, synthetic_seed=1)))
    assert len(c.train) == 100 and len(c.val) == 10
    assert c.train_sha256 == texts_sha256(generate_stories(110, 1)[:100])
    assert not set(c.train) & set(c.val)


def test_local_text_files_via_datasets(tmp_path):
    """The `data=local` path on a text file the project writes (python -m backbone_lab.data.write_corpus)."""
    sample = write_corpus(tmp_path / "stories.txt", 600, seed=5)
    stories = generate_stories(600, seed=5)
    recs = load_local_texts([sample], cache_dir=tmp_path)
    assert recs == stories  # one record per paragraph, newlines stripped
    c = load_corpus(DataConfig(source="local", options=dict(train_files=[str(sample)]), max_train_texts=300), cache_dir=tmp_path)
    assert all(len(t) >= 40 and t.strip() for t in c.train + c.val)
    assert len(c.train) <= 300 and 0 < len(c.val) <= round(len(recs) * 0.05)  # held-out tail
    assert c.val[-1] == recs[-1] and not c.val[-1].endswith("\n")


def test_write_corpus_command_writes_what_data_local_reads(tmp_path):
    out = subprocess.run([sys.executable, "-m", "backbone_lab.data.write_corpus", str(tmp_path / "c.txt"),
                          "--stories", "50", "--seed", "2"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert out.returncode == 0, out.stderr
    assert f"data=local data.options.train_files=[{tmp_path / 'c.txt'}]" in out.stdout
    assert (tmp_path / "c.txt").read_text().split("\n\n") == generate_stories(50, 2)[:-1] + [generate_stories(50, 2)[-1] + "\n"]


def test_local_jsonl(tmp_path):
    rows = [{"text": f"Story number {i} about a cat who liked to play in the park."} for i in range(5)]
    f = tmp_path / "s.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    c = load_corpus(DataConfig(source="local", options=dict(train_files=[str(f)], val_files=[str(f)])), cache_dir=tmp_path)
    assert c.train == [r["text"] for r in rows] == c.val


def test_missing_local_path_is_one_line_error(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError) as e:
        load_corpus(DataConfig(source="local", options=dict(train_files=[str(missing)])), cache_dir=tmp_path)
    msg = str(e.value)
    assert str(missing) in msg and "\n" not in msg
    with pytest.raises(ValueError, match="data.source='nope' is not one of synthetic | local | tinystories"):
        DataConfig(source="nope")
    with pytest.raises(DataError, match="data.source='no_such_module:stories': cannot import it"):
        load_corpus(DataConfig(source="no_such_module:stories"))


def test_hub_offline_errors_are_actionable(tmp_path):
    """Real hub code paths, run offline (HF_HUB_OFFLINE=1 makes them fail fast)."""
    code = (
        "from backbone_lab.data.sources.tinystories_hub import load_hub_texts\n"
        "from backbone_lab.data.tokenizer import load_pretrained_tokenizer\n"
        "from backbone_lab.data.errors import DataError\n"
        "for f in (lambda: load_hub_texts('roneneldan/TinyStories', 'train', 10, %r),\n"
        "          lambda: load_pretrained_tokenizer('EleutherAI/pythia-70m')):  # not GPT-2's BPE: no fallback\n"
        "    try:\n        f()\n        print('LOADED')\n"
        "    except DataError as e:\n        print('ERR', e)\n" % str(tmp_path)
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("ERR", "LOADED"))]
    assert len(lines) == 2, out.stdout + out.stderr
    assert "data=local data.options.train_files=" in lines[0]
    assert "data.tokenizer=bpe" in lines[1] and "data.tokenizer_name=gpt2" in lines[1]


# ---------------------------------------------------------------- tokenizer
def test_pseudo_words_deterministic():
    w = pseudo_words(64, seed=0)
    assert w == pseudo_words(64, seed=0) == sorted(w) and len(set(w)) == 64
    assert all(x.isupper() and x.isalpha() and len(x) == 4 for x in w)


def test_bpe_pseudo_words_are_single_tokens_and_cached(env):
    tok, corpus, cache = env["tok"], env["corpus"], env["cache"]
    assert tok.vocab_size == 400 and tok.decode([tok.eos_id]) == "<|endoftext|>"
    for w in pseudo_words(32, 0):
        assert len(tok.encode(" " + w)) == 1
    again = load_or_train_bpe(corpus.train, 400, cache, n_pseudo_words=32)
    assert again.tok.to_str() == tok.tok.to_str() and again.fingerprint == tok.fingerprint
    assert len(list((Path(cache) / "tokenizers").glob("bpe-*.json"))) == 1
    text = corpus.train[0]
    ids, offs = tok.encode_with_offsets(text)
    assert ids == tok.encode(text) and tok.decode(ids) == text
    assert "".join(text[a:b] for a, b in offs) == text


def test_bpe_too_small_vocab_is_clear(tmp_path):
    texts = generate_stories(50, 0)
    with pytest.raises(DataError, match="vocab_size"):
        load_or_train_bpe(texts, 320, tmp_path, n_pseudo_words=200)


# ---------------------------------------------------------------- token store
def test_token_store_roundtrip_and_cache(env):
    tok, corpus, cache = env["tok"], env["corpus"], env["cache"]
    st = build_token_store(corpus.train, tok, cache)
    assert st.n_docs == len(corpus.train) and st.tokens.dtype == np.uint16
    for i in (0, 7, st.n_docs - 1):
        assert st.doc(i).tolist() == tok.encode(corpus.train[i])
    assert st.n_tokens == sum(len(tok.encode(t)) for t in corpus.train)
    st2 = build_token_store(corpus.train, tok, cache)
    assert st2.path == st.path
    st3 = pickle.loads(pickle.dumps(st))
    assert len(pickle.dumps(st)) < 1000 and np.array_equal(st3.doc(3), st.doc(3))
    other = build_token_store(corpus.val, tok, cache)
    assert other.path != st.path
    assert isinstance(TokenStore(st.path).doc(0), np.ndarray)


# ---------------------------------------------------------------- codewords
def test_codeword_pool_and_selection(env):
    tok = env["tok"]
    pool = codeword_candidates(tok)
    assert set(pseudo_words(32, 0)) <= set(pool) and pool == sorted(pool)
    for w in pool:
        assert w.isupper() and w.isalpha() and len(w) >= 4 and len(tok.encode(" " + w)) == 1
    a = select_codewords(tok, 16, 42)
    assert a == select_codewords(tok, 16, 42) and len(set(a)) == 16
    assert a != select_codewords(tok, 16, 7)
    with pytest.raises(DataError, match="n_codewords"):
        select_codewords(tok, len(pool) + 1)


def test_codewords_file_checksum_and_mismatch(tmp_path):
    words = ["ALPHA", "BRAVO", "CHARLIE"]
    p = save_codewords(tmp_path, words)
    doc = json.loads(p.read_text())
    assert doc == {"codewords": words, "count": 3, "sha256": codewords_sha256(words)}
    assert load_codewords(tmp_path) == words
    save_codewords(tmp_path, words)  # identical: fine (resume)
    with pytest.raises(DataError, match="different codeword list"):
        save_codewords(tmp_path, ["ALPHA", "BRAVO", "DELTA"])
    doc["codewords"][0] = "ZULU"
    p.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="corrupt"):
        load_codewords(tmp_path)
    assert load_codewords(tmp_path / "empty") is None
