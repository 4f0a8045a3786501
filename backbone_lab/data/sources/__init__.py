"""Data sources: where a run's training and validation texts come from (`data.source`).

A built-in source is one module of this package holding two things:

- `Options`, the dataclass of its own keys (`data.options.<key>`; registered with Hydra as
  `data_source/<name>`, so `conf/data/<name>.yaml` pulls it in and a mistyped key stops at
  composition);
- `texts(options, config, cache_dir) -> (train_texts, val_texts)`, the raw records before the shared
  PAPER_MAP §2.1 filters (`corpus.load_corpus` applies them to every source; `config` is the
  whole `DataConfig`, for its general keys such as `max_train_texts`).

A user source is `data.source=package.module:function`, `function(config) -> (train, val)`,
reading its own keys from `config.options` (a free dict). Adding a built-in source is one module
here plus its name in `BUILT_IN`; adding a user source is that function and a `conf/data/` YAML.

Torch-free (the CLI checks a command line before importing torch); `datasets` is imported only
when texts are loaded.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import asdict, fields, is_dataclass
from typing import Any, Callable

BUILT_IN = {
    "synthetic": "backbone_lab.data.sources.synthetic",
    "local": "backbone_lab.data.sources.local_files",
    "tinystories": "backbone_lab.data.sources.tinystories_hub",
}
"""Source name -> module (with `Options` and `texts`)."""

USER_SOURCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def is_user_source(name: str) -> bool:
    """`package.module:function` (a user source), not a built-in name."""
    return bool(USER_SOURCE.fullmatch(name))


def source_module(name: str):
    """The module of a built-in source."""
    return importlib.import_module(BUILT_IN[name])


def options_schema(name: str) -> type | None:
    """The `Options` dataclass of a built-in source; None for a user source (free dict)."""
    return source_module(name).Options if name in BUILT_IN else None


def sources_with_option(key: str) -> list[str]:
    """The built-in sources that have option `key` (for "it is an option of data=local")."""
    return [name for name in BUILT_IN if key in {f.name for f in fields(options_schema(name))}]


def checked_options(name: str, options: Any) -> dict[str, Any]:
    """`data.options` of source `name` as a plain dict, checked: for a built-in source every key
    must be one of its `Options` (missing ones take their defaults; `Options.__post_init__`
    checks values); a user source's dict passes as is. Raises ValueError (one line)."""
    values = asdict(options) if is_dataclass(options) else dict(options or {})
    schema = options_schema(name)
    if schema is None:
        return values
    known = [f.name for f in fields(schema)]
    for key in values:
        if key not in known:
            from backbone_lab.did_you_mean import did_you_mean

            owners = " or ".join(f"data={other}" for other in sources_with_option(key))
            elsewhere = f"; it is one of {owners}: choose {owners} with it" if owners else ""
            raise ValueError(f"data.options.{key} is not an option of data.source={name}{did_you_mean(key, known)} "
                             f"(its options: {', '.join(known) or 'none'}){elsewhere}")
    return asdict(schema(**values))


def typed_options(config) -> Any:
    """A `DataConfig`'s options as its built-in source's `Options` (a user source: the dict)."""
    schema = options_schema(config.source)
    return schema(**config.options) if schema is not None else dict(config.options)


def user_source(name: str) -> Callable:
    """The corpus function of a user data source `package.module:function` (one line if missing)."""
    from backbone_lab.data.errors import DataError

    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise DataError(f"data.source={name!r}: cannot import it ({type(err).__name__}: {err}); "
                        "give package.module:function on the Python path") from None
    if not callable(fn):
        raise DataError(f"data.source={name!r} is not a function")
    return fn


def raw_texts(config, cache_dir) -> tuple[list[str], list[str]]:
    """(train, val) records of a `DataConfig`'s source, before the shared filters."""
    if config.source in BUILT_IN:
        return source_module(config.source).texts(typed_options(config), config, cache_dir)
    train, val = user_source(config.source)(config)
    return list(train), list(val)
