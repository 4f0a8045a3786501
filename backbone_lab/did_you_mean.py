"""The nearest valid name to a mistyped one ("did you mean adamw?"), for one-line config errors."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def nearest(name: str, options: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The option closest to `name` (difflib's ratio >= `cutoff`), or None when none is close.

    >>> nearest("adamww", ["adamw", "sgd", "lion"])
    'adamw'
    >>> nearest("anchr_step", ["anchor_step", "cadence"])
    'anchor_step'
    """
    found = difflib.get_close_matches(name, list(options), n=1, cutoff=cutoff)
    return found[0] if found else None


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """' (did you mean X?)' for the nearest option, '' when none is close."""
    best = nearest(name, options)
    return f" (did you mean {best}?)" if best else ""
