"""A schema dataclass from a config node — the one place a node becomes a typed config.

`config_schema.build(group, node)` looks the group's schema up and calls `typed_config`; code
below the composition layer (e.g. the offline diagnostics rebuilding a run's `DataConfig`)
calls it with the schema it already knows, without importing every group's schema.
"""

from __future__ import annotations

from omegaconf import OmegaConf

from backbone_lab.errors import ConfigError


def typed_config(schema: type, node, label: str) -> object:
    """`schema` built from `node` (composed, or a plain dict / a run's saved config.yaml node):
    unknown keys, wrong types and values its `__post_init__` rejects raise a one-line
    `ConfigError` naming the key (prefixed with `label`, e.g. the group name)."""
    try:
        values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
    except Exception as err:  # noqa: BLE001 - OmegaConf wraps __post_init__'s ValueError
        text = str(err).strip().splitlines()[0]
        raise ConfigError(text if text.startswith(f"{label}.") else f"{label}: {text}") from None
