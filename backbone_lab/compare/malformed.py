"""Which run folders `compare` cannot read, and why (one line each).

A malformed run among good ones (an all-NaN or hand-edited `summary.json`, a wrong type in it, a
CSV with a 20 MB field) must not take the comparison of the whole sweep down: `runs.load_run`
turns it into a run of state `unreadable` whose reason names the file and the key, the report
lists it as a row `unreadable: <reason>`, and the other runs are compared as usual
(`python -m backbone_lab.compare` then exits 1: the report is written, but not every run is in it).

`summary.json` is written by the analysis through `json_safe` (a missing number is `null`, never
NaN) with the types below; a file that breaks either rule was not written by it.
No torch import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class UnreadableRun(Exception):
    """A run folder whose files cannot be read as the analysis wrote them (message: one line)."""


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _int_list(x: Any) -> bool:
    return isinstance(x, list) and all(_is_int(v) for v in x)


def _number_list(x: Any) -> bool:
    return isinstance(x, list) and all(v is None or _is_number(v) for v in x)


# dotted key of summary.json -> (what it must be, test); absent or null is always allowed
SUMMARY_TYPES: dict[str, tuple[str, Any]] = {
    "anchor_step": ("an integer", _is_int),
    "cadence": ("an integer", _is_int),
    "dim": ("an integer", _is_int),
    "n_steps": ("an integer", _is_int),
    "steps": ("a list of integers", _int_list),
    "config": ("an object", lambda x: isinstance(x, Mapping)),
    "flags": ("a list of {stage, code, message} objects",
              lambda x: isinstance(x, list) and all(isinstance(f, Mapping) and "code" in f for f in x)),
    "selection.n_used": ("an integer", _is_int),
    "selection.n_dropped": ("an integer", _is_int),
    "selection.dropped": ("a list of {reason, steps} objects",
                          lambda x: isinstance(x, list) and all(isinstance(d, Mapping) and "reason" in d
                                                                and _int_list(d.get("steps")) for d in x)),
    "pca.rownorm.pc1_pct": ("a number", _is_number),
    "pca.raw.pc1_pct": ("a number", _is_number),
    "pca.rownorm.k95": ("an integer", _is_int),
    "pca.raw.k95": ("an integer", _is_int),
    "decomposition.norm_delta_final": ("a number", _is_number),
    "decomposition.backbone_frac_mean": ("a number", _is_number),
    "rolling.rho_mean": ("a number", _is_number),
    "correlations.by_window": ("an object of windows", lambda x: isinstance(x, Mapping)
                               and all(isinstance(v, Mapping) for v in x.values())),
    "fits.windows": ("a list of [start, end] pairs",
                     lambda x: isinstance(x, list) and all(isinstance(w, list) and len(w) == 2 for w in x)),
    "reheating.steps": ("a list of integers", _int_list),
    "reheating.a": ("a list of numbers", _number_list),
    "switching.geometry.pairs": ("a list of objects", lambda x: isinstance(x, list)
                                 and all(isinstance(p, Mapping) for p in x)),
}


def _get(data: Mapping, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _non_finite(x: Any, path: str = "") -> str | None:
    """Dotted path of the first NaN / ±inf in a parsed JSON value (None: there is none)."""
    if isinstance(x, float) and not math.isfinite(x):
        return path or "(top level)"
    if isinstance(x, Mapping):
        for k, v in x.items():
            found = _non_finite(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(x, list):
        for i, v in enumerate(x):
            found = _non_finite(v, f"{path}[{i}]")
            if found:
                return found
    return None


def check_summary(data: Any) -> None:
    """Raise `UnreadableRun` unless `data` (a parsed summary.json) is what the analysis writes."""
    if not isinstance(data, Mapping):
        raise UnreadableRun(f"summary.json holds a {type(data).__name__}, not an object")
    where = _non_finite(data)
    if where:
        raise UnreadableRun(f"summary.json holds NaN/inf at {where} (the analysis writes null for a missing "
                            "number); rerun python -m backbone_lab.analyze on the run")
    for key, (what, ok) in SUMMARY_TYPES.items():
        value = _get(data, key)
        if value is not None and not ok(value):
            shown = repr(value)
            raise UnreadableRun(f"summary.json: {key} is {shown[:40]}{'...' if len(shown) > 40 else ''}, "
                                f"not {what}; rerun python -m backbone_lab.analyze on the run")


def reason_of(err: BaseException, what: str) -> str:
    """One line for a failure while reading `what` (a file name)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if len(text) > 160:
        text = text[:160] + "..."
    if isinstance(err, UnreadableRun):
        return text
    kind = "csv.Error" if type(err).__module__ == "_csv" else type(err).__name__
    return f"{what}: {kind}: {text}"
