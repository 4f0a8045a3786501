"""docs/notebooks/inspect_a_run.ipynb runs headless (nbclient) on a real tiny run: it loads the
run's summary and trajectory through the public API, checks its own PCA against summary.json and
draws its figure. The committed copy is an executed notebook (it has its outputs)."""

from __future__ import annotations

import os

import pytest

from conftest import REPO, TINY_OVERRIDES, compose_config

NOTEBOOK = REPO / "docs" / "notebooks" / "inspect_a_run.ipynb"


def _outputs(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def test_the_committed_notebook_is_executed():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert any("image/png" in o.get("data", {}) for o in _outputs(nb))
    assert not any(o.get("output_type") == "error" for o in _outputs(nb))
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert "BACKBONE_LAB_RUN" in params.source


@pytest.mark.slow
def test_notebook_runs_headless_on_a_tiny_run(tmp_path, monkeypatch):
    import nbclient
    import nbformat

    from backbone_lab.analysis import Summary
    from backbone_lab.train import train

    run = tmp_path / "run"
    cfg = compose_config(TINY_OVERRIDES + [f"run_dir={run}", f"paths.cache_dir={tmp_path / 'cache'}"])
    assert train(cfg)["status"] == "done"
    monkeypatch.setenv("BACKBONE_LAB_RUN", str(run))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend puts the figure in the outputs
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:  # run from a clean slate, not on the committed outputs
        if cell.cell_type == "code":
            cell.outputs = []
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    out = _outputs(nb)
    text = "".join(o.get("text", "") for o in out)
    pc1 = Summary.read(run).pc1_raw_pct
    assert f"(summary.json: {pc1:.2f} %)" in text and f"{len(Summary.read(run).steps)} analysed snapshots" in text
    assert sum("image/png" in o.get("data", {}) for o in out) == 1
