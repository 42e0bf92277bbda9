"""The Colab notebook runs headless from top to bottom: a short run on the tests' tiny config, whose
programs the trainer's tests compile too (one compile, shared through the compilation cache)."""

import os

import nbformat
from nbclient import NotebookClient

from tests import train_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIMEJAX_NOTEBOOK_CONFIG", os.path.join(ROOT, "tests", "train_config.py"))
    monkeypatch.setenv("PRIMEJAX_NOTEBOOK_STEPS", "2")
    monkeypatch.setenv("PRIMEJAX_NOTEBOOK_SFT_STEPS", str(train_config.get_config().sft.steps))
    monkeypatch.setenv("PRIMEJAX_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
    notebook = nbformat.read(os.path.join(ROOT, "notebooks", "primejax_demo.ipynb"), as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "held-out pass@1:" in outputs and "-> " in outputs
    assert any("image/png" in o.get("data", {}) for cell in notebook.cells for o in cell.get("outputs", []))
    assert (tmp_path / "run" / "export" / "model.safetensors").exists()
