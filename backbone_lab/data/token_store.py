"""Pre-tokenised corpus: one flat memory-mapped token array plus document offsets.

Layout of ``<cache_dir>/tokens/<key>/`` (key = sha256(corpus sha256, tokenizer fingerprint)):

- ``tokens.bin``: all documents' token ids back to back, ``uint16`` if |V| < 65536 else
  ``uint32`` (little-endian), no separators (PAPER_MAP §2.1: stories are tokenised independently);
- ``offsets.npy``: int64 ``(n_docs + 1,)``; document i is ``tokens[offsets[i]:offsets[i+1]]``;
- ``meta.json``: dtype, counts, keys.

Built once with batch encoding, written to a temp dir and renamed atomically (PAPER_MAP §2.8).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .tokenizer import TextTokenizer, texts_sha256

_CHUNK = 8192  # texts per encode_batch call (bounds the memory of Python id lists)


class TokenStore:
    """Read-only view of a built store. Pickles by path (cheap to send to DataLoader workers)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.dtype = np.dtype(self.meta["dtype"])
        self.offsets = np.load(self.path / "offsets.npy")
        self._tokens = None

    @property
    def tokens(self) -> np.ndarray:
        """All tokens, shape (n_tokens,), memory-mapped on first use."""
        if self._tokens is None:
            n = int(self.offsets[-1])
            if n == 0:
                self._tokens = np.zeros(0, dtype=self.dtype)
            else:
                self._tokens = np.memmap(self.path / "tokens.bin", dtype=self.dtype, mode="r", shape=(n,))
        return self._tokens

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def doc(self, i: int) -> np.ndarray:
        """Token ids of document ``i`` as int64, shape (len_i,)."""
        if not 0 <= i < self.n_docs:
            raise IndexError(f"document {i} out of range [0, {self.n_docs})")
        return np.asarray(self.tokens[self.offsets[i] : self.offsets[i + 1]], dtype=np.int64)

    def __len__(self) -> int:
        return self.n_docs

    def __getstate__(self):
        return {"path": str(self.path)}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __repr__(self) -> str:
        return f"TokenStore({str(self.path)!r}, n_docs={self.n_docs}, n_tokens={self.n_tokens})"


def store_key(corpus_sha: str, tokenizer_fingerprint: str) -> str:
    return hashlib.sha256(f"{corpus_sha}:{tokenizer_fingerprint}".encode()).hexdigest()[:20]


def build_token_store(
    texts: Sequence[str],
    tokenizer: TextTokenizer,
    cache_dir: str | Path,
    corpus_sha: str | None = None,
) -> TokenStore:
    """Tokenise ``texts`` once (cached by (corpus sha256, tokenizer fingerprint)) and open the store."""
    corpus_sha = corpus_sha or texts_sha256(texts)
    key = store_key(corpus_sha, tokenizer.fingerprint)
    final = Path(cache_dir) / "tokens" / key
    if (final / "meta.json").exists():
        return TokenStore(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype("<u2" if tokenizer.vocab_size < 65536 else "<u4")  # little-endian on disk
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}."))
    try:
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        with open(tmp / "tokens.bin", "wb") as fh:
            pos = 0
            for s in range(0, len(texts), _CHUNK):
                ids = tokenizer.encode_batch(texts[s : s + _CHUNK])
                lens = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
                flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lens.sum()))
                fh.write(flat.tobytes())
                offsets[s + 1 : s + 1 + len(ids)] = pos + np.cumsum(lens)
                pos += int(lens.sum())
        np.save(tmp / "offsets.npy", offsets)
        meta = {
            "format": "backbone_lab.token_store", "version": 1, "dtype": dtype.str,
            "n_docs": len(texts), "n_tokens": int(offsets[-1]), "corpus_sha256": corpus_sha,
            "tokenizer": tokenizer.name, "tokenizer_fingerprint": tokenizer.fingerprint,
            "vocab_size": tokenizer.vocab_size,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: identical content, keep theirs
            if not (final / "meta.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return TokenStore(final)
