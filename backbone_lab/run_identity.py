"""What makes two configs the same run: one list of neutral keys, used everywhere.

`NEUTRAL_KEYS` name places and presentation, not what a run computes: where it is written,
how it is logged, whether it is analysed afterwards, how many loader workers feed it. The
resume check (`train.py`), the sweep fingerprint (`sweep.py`), the swept-key detection of
`compare` and Hydra's job folder names (`conf/hydra/default.yaml: exclude_keys`, checked
against this list by a test) all drop exactly these keys.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, ListConfig, OmegaConf

from backbone_lab.saved_config import upgrade

NEUTRAL_KEYS = (
    "run_dir", "run_name", "resume", "analyze", "logger", "paths", "tags", "experiment_name",
    "callbacks.progress", "data.cache_dir", "data.num_workers", "data.pin_memory", "snapshots.async_write",
    "trainer.collective_timeout_s",
)


# A resumed run may also change its callbacks: diagnostics can be added to a running run, and a
# fault-injection callback dropped (what a callback computes is recorded in its own files).
RESUME_ALSO_NEUTRAL = ("callbacks",)


def is_neutral(dotted_key: str, extra: tuple[str, ...] = ()) -> bool:
    """Whether a dotted config key is (inside) a neutral key."""
    return any(dotted_key == k or dotted_key.startswith(k + ".") for k in NEUTRAL_KEYS + extra)


def plain(value):
    """OmegaConf nodes -> plain Python containers (resolved); anything else unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def flatten(data: dict, prefix: str = "") -> dict:
    """Nested dict -> {dotted key: leaf value} (lists are leaves; empty dicts vanish)."""
    out = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def comparable(cfg, extra: tuple[str, ...] = ()) -> dict:
    """The resolved config in today's layout (`saved_config.upgrade`) as {dotted key: value}
    without neutral keys (and without `hydra`)."""
    data = plain(cfg) if isinstance(cfg, (DictConfig, ListConfig)) else json.loads(json.dumps(cfg, default=str))
    data = upgrade(data)  # a run saved in an older layout compares equal to its re-run today
    data.pop("hydra", None)
    return {k: v for k, v in flatten(data).items() if not is_neutral(k, extra)}


def fingerprint(cfg) -> str:
    """sha256 (first 16 hex digits) of `comparable(cfg)` as canonical JSON."""
    text = json.dumps(comparable(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(a, b, extra: tuple[str, ...] = ()) -> list[tuple[str, object, object]]:
    """Non-neutral keys whose values differ: [(key, value in a, value in b)], sorted by key."""
    fa, fb = comparable(a, extra), comparable(b, extra)
    missing = object()
    diff = []
    for k in sorted(set(fa) | set(fb)):
        va, vb = fa.get(k, missing), fb.get(k, missing)
        if json.dumps(va, sort_keys=True, default=str) != json.dumps(vb, sort_keys=True, default=str):
            diff.append((k, None if va is missing else va, None if vb is missing else vb))
    return diff
