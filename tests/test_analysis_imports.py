"""The analysis package imports no torch and has no import circles.

Each module is imported *first* in a fresh interpreter (a circle only shows when the import
starts inside it), with ``sys.modules["torch"] = None`` so that any torch import fails. One more
interpreter runs a whole default analysis with torch blocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from process_batch import start_side_by_side

REPO = Path(__file__).resolve().parents[1]
BLOCK_TORCH = "import sys; sys.modules['torch'] = None; "


def _modules(package: str) -> list[str]:
    """Dotted names of a package and all its modules, from the files (nothing is imported here)."""
    root = REPO / Path(*package.split("."))
    out = []
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(REPO).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


ANALYSIS = _modules("backbone_lab.analysis")
COMPARE = _modules("backbone_lab.compare")


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)


def test_every_analysis_module_is_listed():
    assert "backbone_lab.analysis.stages.pca" in ANALYSIS and "backbone_lab.analysis.summary" in ANALYSIS
    assert len(ANALYSIS) > 25


@pytest.fixture(scope="module")
def first_imports(request, tmp_path_factory):
    """The fresh interpreters of the selected tests below, started side by side (tests/process_batch.py)."""
    batch = start_side_by_side(request, tmp_path_factory, {
        "test_module_imports_first_without_torch":
            lambda item, tmp: _python(BLOCK_TORCH + f"import {item.callspec.params['module']}")})
    yield batch
    batch.close()


@pytest.mark.parametrize("module", ANALYSIS + COMPARE)
def test_module_imports_first_without_torch(first_imports, request, module):
    p = first_imports.result(request.node.name)  # python -c "<torch blocked>; import {module}"
    assert p.returncode == 0, p.stderr.strip().splitlines()[-1] if p.stderr else p


def test_default_analysis_runs_without_torch(tmp_path):
    code = BLOCK_TORCH + f"""
import numpy as np
from backbone_lab.analysis.config import AnalysisConfig
from backbone_lab.analysis.run_analysis import run_analysis
from backbone_lab.trajectory.store import TrajectoryWriter
rng = np.random.default_rng(0)
w = TrajectoryWriter({str(tmp_path / 'run' / 'trajectory')!r})
x = np.zeros(96, dtype=np.float32)
for s in range(0, 2401, 100):
    x = x + rng.standard_normal(96).astype(np.float32) + 0.5
    w.append(s, {{"blocks.0.attn.qkv.weight": x[:48].reshape(12, 4), "blocks.1.attn.qkv.weight": x[48:].reshape(12, 4)}})
s = run_analysis({str(tmp_path / 'run')!r}, AnalysisConfig(corr_bootstrap=0, progress=False))
assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]
print(len(s['stages']), len(s['figures']))
"""
    p = _python(code)
    assert p.returncode == 0, p.stderr[-2000:]
    n_stages, n_figs = map(int, p.stdout.split())
    assert n_stages == 9 and n_figs >= 6  # pca .. per_block, controls, null_baseline (no eval metrics, no diagnostics)
