"""The notebooks run offline from top to bottom and show their figures (executed with nbclient).

Committed notebooks carry no outputs; this test executes copies in memory.
"""
import json
import os
from pathlib import Path

import nbformat  # test extra: nbclient, nbformat, ipykernel
import pytest
from nbclient import NotebookClient

import vdna

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {"quick_tour.ipynb", "neuron_deep_dive.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_plots(path, tmp_path, monkeypatch):
    # the kernel imports the vdna this test imported (checkout or installed)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(vdna.__file__).resolve().parent.parent),
                                                      os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    plot_cells = [c for c in nb.cells if c.cell_type == "code" and "plt.show()" in c.source]
    assert plot_cells
    for cell in plot_cells:
        assert any("image/png" in out.get("data", {}) for out in cell.outputs), f"no figure from: {cell.source[:60]}"
