"""Data layer: corpus, tokenizer, token memmap, codewords, probe task, datasets, evaluation.

Lightning is imported only by ``datamodule`` (import ``BackboneDataModule`` from there).
Module map: synthetic (stories) -> corpus (texts) -> tokenizer -> token_store (memmap) ->
codewords -> probe (templates, example assembly) -> examples (datasets, sampler, collate);
evaluation (one-pass probe/LM metrics); errors (DataError).
"""

from .errors import DataError

__all__ = ["DataError"]
