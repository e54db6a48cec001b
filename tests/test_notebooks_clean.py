"""Notebooks are committed without outputs; CI executes them with nbmake."""

import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


class TestNotebooks:
    def test_the_documented_notebooks_exist(self):
        names = {path.name for path in NOTEBOOKS}
        assert {"quickstart.ipynb", "exact_sparsity.ipynb", "deep_network.ipynb"} <= names

    @pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
    def test_committed_without_outputs(self, path):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        dirty = [
            index
            for index, cell in enumerate(notebook["cells"])
            if cell["cell_type"] == "code"
            and (cell.get("outputs") or cell.get("execution_count") is not None)
        ]
        # Clear them with: jupyter nbconvert --clear-output --inplace notebooks/*.ipynb
        assert dirty == [], f"{path.name}: code cells {dirty} have outputs"

    @pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
    def test_has_no_stale_kernel_metadata(self, path):
        # Widget state and execution timings are outputs too, just stored elsewhere.
        notebook = json.loads(path.read_text(encoding="utf-8"))
        assert "widgets" not in notebook["metadata"]
        assert all("execution" not in cell.get("metadata", {}) for cell in notebook["cells"])
