"""Codewords for the probe task (SPEC §2.3) and their persisted, checksummed list.

Pool rule (deliberate deviation from the reference, fixing W7): a vocabulary entry whose
decoded text, stripped of spaces, is ASCII, uppercase, alphabetic and >= ``min_len`` long,
and for which ``" " + word`` encodes to exactly ONE token. The reference tests the bare word
(no space) although the answer always follows a space in the query; we test the form that
actually occurs, and the probe code still locates the answer span by offsets and asserts its
length (``probe.ProbeBank``). The pool is sorted, shuffled with ``random.Random(codeword_seed)``
(default 42, independent of the run seed) and the first ``n_codewords`` are taken.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Sequence

from .errors import DataError
from .tokenizer import TextTokenizer

CODEWORDS_FILE = "codewords.json"


def codeword_candidates(tokenizer: TextTokenizer, min_len: int = 4) -> list[str]:
    """Sorted pool of single-token uppercase words (see module docstring)."""
    ids = sorted(set(tokenizer.get_vocab().values()))
    words = {w.strip() for w in tokenizer.tok.decode_batch([[i] for i in ids], skip_special_tokens=False)}
    words = sorted(w for w in words if len(w) >= min_len and w.isascii() and w.isalpha() and w.isupper())
    encoded = tokenizer.encode_batch([" " + w for w in words])
    return [w for w, ids in zip(words, encoded) if len(ids) == 1]


def select_codewords(tokenizer: TextTokenizer, n_codewords: int, codeword_seed: int = 42) -> list[str]:
    """First ``n_codewords`` of the sorted pool shuffled by ``random.Random(codeword_seed)``."""
    pool = codeword_candidates(tokenizer)
    if len(pool) < n_codewords:
        raise DataError(
            f"only {len(pool)} single-token codewords in {tokenizer.name} but data.n_codewords="
            f"{n_codewords}; lower data.n_codewords or raise data.vocab_size"
        )
    random.Random(codeword_seed).shuffle(pool)
    return pool[:n_codewords]


def codewords_sha256(codewords: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(codewords)).encode("utf-8")).hexdigest()


def save_codewords(run_dir: str | Path, codewords: Sequence[str]) -> Path:
    """Write ``<run_dir>/codewords.json`` = {codewords, count, sha256}; keep an identical file.

    Raises ``DataError`` if the run dir already holds a *different* list (e.g. resuming a run
    with a changed tokenizer or codeword config).
    """
    path = Path(run_dir) / CODEWORDS_FILE
    existing = load_codewords(run_dir)
    if existing is not None:
        if list(existing) != list(codewords):
            raise DataError(
                f"{path} holds a different codeword list (sha256 {codewords_sha256(existing)[:12]} "
                f"vs {codewords_sha256(codewords)[:12]}); the data config changed - use a new run dir"
            )
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"codewords": list(codewords), "count": len(codewords), "sha256": codewords_sha256(codewords)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return path


def load_codewords(run_dir: str | Path) -> list[str] | None:
    """The checksum-verified list in ``<run_dir>/codewords.json``, or None if there is none."""
    path = Path(run_dir) / CODEWORDS_FILE
    if not path.exists():
        return None
    doc = json.loads(path.read_text())
    words = doc.get("codewords")
    if not isinstance(words, list) or doc.get("count") != len(words) or doc.get("sha256") != codewords_sha256(words):
        raise DataError(f"{path} is corrupt (count/sha256 do not match its codeword list)")
    return words
