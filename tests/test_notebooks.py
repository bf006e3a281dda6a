import os

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(__file__), "..", "notebooks")


@pytest.mark.parametrize("name, says, figure", [
    ("emodb_model_fit.ipynb", "test UAR", "confusion.png"),
    pytest.param("quickstart.ipynb", "(true: ", "my-export", marks=pytest.mark.slow),
    pytest.param("reproduce.ipynb", "The paper's tables on emodb", "reproduce-emodb/fig4_confusion.png",
                 marks=pytest.mark.slow),
    pytest.param("tuning.ipynb", "chosen learning rate", "val_uar_vs_lr.png", marks=pytest.mark.slow),
])
def test_notebook_runs_top_to_bottom(name, says, figure, tmp_path, emodb_root, emodb_store, monkeypatch):
    monkeypatch.setenv("MSIR_EMODB", emodb_root)
    monkeypatch.setenv("MSIR_STORE", emodb_store.root)
    monkeypatch.setenv("MSIR_EPOCHS", "3")
    notebook = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    assert says in outputs
    assert (tmp_path / figure).exists()
