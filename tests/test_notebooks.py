"""Every notebook runs top to bottom, with its parameters cell overridden as papermill does.

Each notebook sets its corpus, corpus size, model preset and epochs in one
cell tagged "parameters"; the test adds a cell after it (tagged
"injected-parameters") that makes the run a quick look: the session's feature
store, four utterances per speaker and class, the tiny preset, one epoch.
Every cell still runs, in order, in a real Jupyter kernel.
"""

import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(__file__), "..", "notebooks")


def inject_parameters(notebook, values):
    """Adds a cell of `values` after the cell tagged "parameters" (there must be exactly one)."""
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells tagged 'parameters'"
    known = notebook.cells[tagged[0]].source
    for name in values:
        assert f"\n{name} = " in "\n" + known, f"{name} is not a parameter of the notebook"
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(tagged[0] + 1, cell)


@pytest.mark.parametrize("name, extra, says, figure", [
    pytest.param("emodb_model_fit.ipynb", {}, "test UAR", "confusion.png", marks=pytest.mark.slow),
    pytest.param("quickstart.ipynb", {}, "(true: ", "my-export", marks=pytest.mark.slow),
    pytest.param("tuning.ipynb", {}, "chosen learning rate", "val_uar_vs_lr.png", marks=pytest.mark.slow),
    # The eGeMAPS SVM stands in for the ComParE one (its 88 functionals are quicker to extract).
    pytest.param("reproduce.ipynb", {"ROWS": ["egemaps-svm", "acrnn-2d-llf-3d", "msir-ce", "msir"]},
                 "The paper's tables on manifest", "reproduce-emodb/fig4_confusion.png", marks=pytest.mark.slow),
])
def test_notebook_runs_top_to_bottom(name, extra, says, figure, tmp_path, emodb_root, emodb_store):
    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    where = {"WAVS": os.path.join(emodb_root, "wav")} if name == "quickstart.ipynb" else {"EMODB": emodb_root}
    inject_parameters(notebook, {**where, "STORE": emodb_store.root, "PER_CLASS": 4, "PRESET": "tiny",
                                 "EPOCHS": 1, **extra})
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    assert says in outputs
    assert (tmp_path / figure).exists()
