"""``package.module:object`` -> the object (the one way the analysis imports user code by name).

A leaf module (imports nothing of the package), so both the stage registry and the stages that
take hooks by name (``diagnostics``) use it without importing each other.
"""

from __future__ import annotations

import importlib
from typing import Any


def load_object(path: str) -> Any:
    """``package.module:attr`` -> the attribute (one-line ValueError when it cannot be imported)."""
    mod, _, attr = path.partition(":")
    if not mod or not attr:
        raise ValueError(f"{path!r} is not module:object")
    try:
        obj = importlib.import_module(mod)
    except ImportError as e:
        raise ValueError(f"{path!r} cannot be imported ({e})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{path!r}: module {mod!r} has no {attr!r}") from None
    return obj
