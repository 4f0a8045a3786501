"""Data sources (`data.source`, `data.options`): each built-in source's keys live in its own
`Options`, checked before any data is read; a new built-in source is one module + one registry
line; a user source keeps a free options dict."""

from __future__ import annotations

import sys
import textwrap

import pytest

from backbone_lab.data import sources
from backbone_lab.data.config import DataConfig
from backbone_lab.data.corpus import MIN_CHARS, load_corpus


def test_options_are_filled_with_the_sources_defaults_and_checked():
    assert DataConfig().options == {"n_train_stories": 8000, "n_val_stories": 400, "synthetic_seed": 1234}
    assert DataConfig(source="local", options={"train_files": ["a.txt"]}).options["val_fraction"] == 0.05
    with pytest.raises(ValueError, match=r"data.options.n_train_storis is not an option of data.source=synthetic "
                                         r"\(did you mean n_train_stories\?\)"):
        DataConfig(options={"n_train_storis": 3})
    with pytest.raises(ValueError, match=r"data.options.train_files .* it is one of data=local"):
        DataConfig(options={"train_files": ["a.txt"]})
    with pytest.raises(ValueError, match=r"data=local needs data.options.train_files"):
        DataConfig(source="local")
    with pytest.raises(ValueError, match=r"data.options.val_fraction must be in \[0, 1\], got 1.5"):
        DataConfig(source="local", options={"train_files": ["a.txt"], "val_fraction": 1.5})
    with pytest.raises(ValueError, match=r"data.options.n_val_stories must be >= 0"):
        DataConfig(options={"n_val_stories": -1})
    assert DataConfig(source="pkg.mod:fn", options={"anything": 1}).options == {"anything": 1}  # a user source's own


def test_the_synthetic_source_splits_one_stream(tmp_path):
    """Validation = the stories right after the training ones (one seeded stream)."""
    from backbone_lab.data import synthetic

    train, val = sources.raw_texts(DataConfig(options={"n_train_stories": 30, "n_val_stories": 5, "synthetic_seed": 9}),
                                   tmp_path)
    assert train + val == synthetic.generate_stories(35, 9) and len(val) == 5


def test_a_built_in_source_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
    (tmp_path / "fable_source.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass


        @dataclass
        class Options:
            animal: str = "fox"
            n: int = 5

        def texts(options, config, cache_dir):
            story = f"Once upon a time a {options.animal} walked to the river and drank the cold water there."
            return [f"{i}: {story}" for i in range(options.n)], [story, "too short"]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sources.BUILT_IN, "fables", "fable_source")
    sys.modules.pop("fable_source", None)
    config = DataConfig(source="fables", options={"animal": "crow"}, max_train_texts=3)
    assert config.options == {"animal": "crow", "n": 5}
    corpus = load_corpus(config)
    assert len(corpus.train) == 3 and "crow" in corpus.train[0] and corpus.val == [corpus.val[0]]  # shared filters
    assert all(len(t) >= MIN_CHARS for t in corpus.val)
    with pytest.raises(ValueError, match="data.options.anmal is not an option of data.source=fables"):
        DataConfig(source="fables", options={"anmal": "crow"})
    # Hydra gets the new source's schema too: conf/data/<name>.yaml can pull `/data_source@options: fables`
    from hydra.core.config_store import ConfigStore

    from backbone_lab.config_schema import register_configs

    register_configs()
    assert "fables.yaml" in ConfigStore.instance().list("data_source")


def test_a_typo_in_a_source_key_stops_at_composition():
    from hydra.errors import ConfigCompositionException

    from conftest import compose_config

    with pytest.raises(ConfigCompositionException, match="n_train_storis"):
        compose_config(["data.options.n_train_storis=3"])
    cfg = compose_config(["debug=tiny", "data=local", "data.options.train_files=[a.txt]"])  # tiny's corpus size is
    assert cfg.data.source == "local" and "n_train_stories" not in cfg.data.options      # the synthetic source's own
