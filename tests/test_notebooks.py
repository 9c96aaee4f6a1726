"""The data scientists' notebooks: committed without outputs, thin, and runnable top to bottom.

The fast tests read the notebooks as committed. The slow test executes each one with
nbclient in a kernel running this interpreter (a kernelspec written to a temporary
JUPYTER_PATH, so no global Jupyter setup is used or changed), on tiny simulated data in
``tmp_path``. Executed copies are kept in test-artifacts/notebooks/ (git-ignored).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts" / "notebooks"
# Simulated accounts per notebook: as small as runs honestly (400 is about the fewest that train).
SIZES = {"01-explore-event-log.ipynb": 300, "02-model-review.ipynb": 400}
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_SECONDS = 600


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def _code(cell: nbformat.NotebookNode) -> str:
    """Cell source as Python: IPython magics (``%...``) and shell escapes (``!...``) removed."""
    return "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))


def test_every_notebook_has_a_size_for_the_test_run():
    assert {p.name for p in NOTEBOOKS} == set(SIZES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs_or_execution_counts(path):
    notebook = _read(path)
    nbformat.validate(notebook)
    dirty = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; run `python notebooks/strip.py`"
    assert not any("execution" in cell.metadata for cell in notebook.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defines_no_function_or_class(path):
    # Reusable logic belongs in pes_ml with a test; a notebook only calls it.
    for i, cell in enumerate(_read(path).cells):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(_code(cell), filename=f"{path.name}[{i}]")
        defined = [
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
        assert not defined, f"{path.name} cell {i} defines {defined}; move them to pes_ml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_reads_its_size_and_work_dir_from_the_environment_in_the_first_code_cell(path):
    first = next(cell for cell in _read(path).cells if cell.cell_type == "code")
    assert "PES_NOTEBOOK_ACCOUNTS" in first.source
    assert "PES_NOTEBOOK_DIR" in first.source


def test_strip_script_removes_outputs_and_check_mode_reports_them(tmp_path):
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "1 + 1",
                execution_count=3,
                outputs=[
                    nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=3)
                ],
            )
        ]
    )
    notebook.cells[0].metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    path = tmp_path / "executed.ipynb"
    nbformat.write(notebook, path)
    script = [sys.executable, str(NOTEBOOK_DIR / "strip.py")]

    check = subprocess.run([*script, "--check", str(path)], capture_output=True, text=True)
    assert check.returncode == 1
    assert "executed.ipynb: has outputs" in check.stdout

    assert subprocess.run([*script, str(path)], check=True).returncode == 0
    cell = _read(path).cells[0]
    assert cell.outputs == []
    assert cell.execution_count is None
    assert "execution" not in cell.metadata
    assert cell.source == "1 + 1"
    assert subprocess.run([*script, "--check", str(path)]).returncode == 0


# --- execution -----------------------------------------------------------------------------------


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A ``python3`` kernelspec for this interpreter, found first on a temporary JUPYTER_PATH."""
    from ipykernel.kernelspec import install

    prefix = tmp_path / "jupyter"
    install(prefix=str(prefix))  # argv: [sys.executable, "-m", "ipykernel_launcher", ...]
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("PES_PROJECT_ROOT", str(ROOT))
    return monkeypatch


def _execute(notebook: nbformat.NotebookNode) -> None:
    from nbclient import NotebookClient

    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_SECONDS,
        allow_errors=False,
        # Jupyter starts a notebook in its own folder; so does the test.
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()


@pytest.mark.slow
def test_execution_fails_when_a_cell_raises(kernel_env):
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('boom')")]
    )
    with pytest.raises(CellExecutionError, match="boom"):
        _execute(notebook)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_on_simulated_data(path, tmp_path, kernel_env):
    work = tmp_path / "work"
    kernel_env.setenv("PES_NOTEBOOK_ACCOUNTS", str(SIZES[path.name]))
    kernel_env.setenv("PES_NOTEBOOK_DIR", str(work))
    notebook = _read(path)
    try:
        _execute(notebook)
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, ARTIFACTS / path.name)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    images = sum("image/png" in out.get("data", {}) for cell in code for out in cell.outputs)
    assert images >= 4, f"{path.name} drew {images} figures"
    # Everything went to the work folder, nothing into the checkout.
    assert (work / "sim" / "accounts.parquet").is_file()
    assert not (NOTEBOOK_DIR / "mlflow.db").exists()
    shutil.rmtree(work)
