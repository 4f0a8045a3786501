"""Every extension point is a one- or two-file addition (README "Extending"): each test writes
the files a user would write into a temp dir — outside the package — and runs them end to end
(train + analysis). (An analysis stage: tests/test_analysis_pipeline.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from backbone_lab.run_markers import read_marker
from backbone_lab.trajectory.store import TrajectoryReader
from conftest import REPO, compose_config

RUN = ["train.max_steps=10", "train.eval_every=5", "snapshots.every=2", "analysis.corr_bootstrap=0",
       "analysis.figures=false"]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _train(tmp: Path, *overrides: str) -> Path:
    from backbone_lab.train import train

    cfg = compose_config(["debug=tiny", f"hydra.searchpath=[file://{tmp / 'conf'}]", f"run_dir={tmp / 'run'}",
                          f"paths.cache_dir={tmp / 'cache'}", *RUN, *overrides])
    assert train(cfg)["status"] == "done"
    return tmp / "run"


def test_a_model_family_is_one_yaml(tmp_path):
    """RMSNorm + GELU + rotary positions, untied: a family the package does not ship, chosen by
    component names in one YAML file."""
    _write(tmp_path / "conf" / "model" / "rms_gelu_rope.yaml", """
        defaults: [schema, _self_]
        name: rms_gelu_rope
        n_layer: 3
        d_model: 64
        n_head: 4
        d_ff: 128
        seq_len: 64
        norm: RMSNorm
        mlp: GELU
        positions: rope
        tie_embeddings: false
    """)
    run = _train(tmp_path, "model=rms_gelu_rope")
    reader = TrajectoryReader(run)
    assert reader.blocks == [0, 1, 2] and len(reader.names) == 3 * 4  # the model declared its trunk
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert summary["pca"]["rownorm"]["pc1_pct"] > 0
    assert json.loads((run / "DONE").read_text())["pc1_rownorm_pct"] > 0


def test_a_data_source_is_one_function_and_one_yaml(tmp_path, monkeypatch):
    _write(tmp_path / "my_corpus.py", '''
        """A user's dataset: any function config -> (train texts, val texts)."""
        import random


        def fables(config):
            rng = random.Random(config.synthetic_seed)
            animals = ["fox", "crow", "hare", "tortoise", "lion", "mouse", "ant", "grasshopper"]
            def story():
                a, b = rng.sample(animals, 2)
                return (f"Once a {a} met a {b} near the river. The {a} said hello and the {b} smiled. "
                        f"They shared some bread and walked home together before the sun went down.")
            return [story() for _ in range(300)], [story() for _ in range(40)]
    ''')
    _write(tmp_path / "conf" / "data" / "fables.yaml", """
        defaults: [synthetic, _self_]   # the embedded default's probe and tokenizer settings
        source: my_corpus:fables
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = _train(tmp_path, "data=fables")
    from omegaconf import OmegaConf

    assert OmegaConf.load(run / "config.yaml").data.source == "my_corpus:fables"
    assert read_marker(run)[0] == "DONE" and (run / "tokenizer.json").exists()


def test_an_optimizer_is_one_yaml(tmp_path):
    _write(tmp_path / "conf" / "optimizer" / "adagrad.yaml", """
        _target_: torch.optim.Adagrad
        _partial_: true
        lr: 1.0e-2
        weight_decay: 0.0
    """)
    run = _train(tmp_path, "optimizer=adagrad")
    assert read_marker(run)[0] == "DONE"


def test_the_cli_finds_user_files_through_the_search_path(tmp_path):
    """The same additions from the command line: `hydra.searchpath` + PYTHONPATH, nothing else."""
    _write(tmp_path / "conf" / "model" / "wide.yaml", """
        defaults: [tiny, _self_]
        name: wide
        d_model: 96
        n_head: 6
    """)
    env = {"PYTHONPATH": str(tmp_path), "BACKBONE_LAB_OUTPUT": str(tmp_path / "out"),
           "BACKBONE_LAB_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "backbone_lab", "debug=tiny", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                           "model=wide", "run_name=wide", "analyze=false", *RUN[:3]],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert TrajectoryReader(tmp_path / "out" / "runs" / "wide").tensors[0]["shape"] == [288, 96]
