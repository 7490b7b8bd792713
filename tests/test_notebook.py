"""notebooks/compare_runs.ipynb: executed with nbclient against a store the test fills, and
committed without outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from .conftest import client_for, fast_overrides

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "compare_runs.ipynb"
STRIP = ROOT / "notebooks" / "strip_outputs.py"


def _execute(notebook: nbformat.NotebookNode, tmp_path: Path) -> nbformat.NotebookNode:
    """Run every cell in a kernel of this interpreter (the venv's python, activated or not:
    a kernelspec of our own names ``sys.executable``), started in a scratch directory."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (trademl tests)",
                "language": "python",
            }
        )
    )
    km = KernelManager(
        kernel_name="python3",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec.parent)]),
    )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    client = NotebookClient(
        notebook, km=km, timeout=300, startup_timeout=120, resources={"metadata": {"path": cwd}}
    )
    return client.execute()


def _outputs(notebook: nbformat.NotebookNode, cell_id: str) -> tuple[str, int]:
    """A code cell's printed and displayed text, and how many PNG images it showed."""
    (cell,) = [c for c in notebook.cells if c.get("id") == cell_id]
    text, images = [], 0
    for out in cell.outputs:
        if out.output_type == "stream":
            text.append(out.text)
        elif out.output_type in ("display_data", "execute_result"):
            text.append(out.data.get("text/plain", ""))
            images += "image/png" in out.data
    return "\n".join(text), images


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """What the kernel inherits: no registry URI of the caller's, a private IPython profile."""
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("TRADEML_EXPERIMENT", raising=False)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    return monkeypatch


@pytest.mark.slow
def test_the_notebook_compares_runs_and_backtests_the_production_model(
    production_model, tmp_path, kernel_env
):
    """A random forest on 2,000 candles (Production) and a sweep of a random forest and a
    logistic regression on 1,200: the notebook lists, compares, plots and backtests them."""
    from hydra.core.global_hydra import GlobalHydra

    from trademl.cli import main as cli

    store = production_model["store"]
    GlobalHydra.instance().clear()
    sweep = [
        "train",
        "-m",
        "model=random_forest,logistic_regression",
        *fast_overrides(store),
        f"hydra.sweep.dir={tmp_path}/sweep",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]
    assert cli(sweep) == 0
    GlobalHydra.instance().clear()
    client = client_for(store)
    experiment = client.get_experiment_by_name("trademl").experiment_id
    (parent,) = client.search_runs([experiment], filter_string="tags.sweep = 'parent'")

    kernel_env.setenv("MLFLOW_TRACKING_URI", store["uri"])
    source = nbformat.read(NOTEBOOK, as_version=4)
    source.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)", id="exe"))
    done = _execute(source, tmp_path)

    assert not [o for c in done.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert _outputs(done, "exe")[0].strip() == sys.executable  # the venv's kernel
    # training runs: readable columns, both model types and both data sets, no sweep parent
    runs, _ = _outputs(done, "runs-table")
    assert "3 training runs, 1 sweep parent runs" in runs
    for column in ("model", "data", "labels", "started (UTC)", "duration_s", "sweep"):
        assert column in runs
    assert "val_balanced_accuracy" in runs and "test_balanced_accuracy" in runs
    assert "random_forest" in runs and "logistic_regression" in runs
    assert "n=2000" in runs and "n=1200" in runs
    assert "triple_barrier h=24" in runs and parent.info.run_id not in runs
    # the sweep summary: its trials, the selected trial and its (only) test score
    sweeps, _ = _outputs(done, "sweeps")
    assert parent.info.run_id in sweeps and parent.data.tags["best_run_id"] in sweeps
    assert "selected_test_balanced_accuracy" in sweeps
    # comparison by model type and data set with a chart; the best two runs' figures
    comparison, images = _outputs(done, "comparison")
    assert images == 1
    assert comparison.count("n=2000") == 1 and comparison.count("n=1200") == 1
    assert _outputs(done, "best-runs")[1] == 2
    # the registry: the sweep registered baseline_rf 2, Production is still version 1
    registry, _ = _outputs(done, "registry")
    assert "baseline_rf version 1 is in stage Production (@champion" in registry
    assert production_model["result"].run_id in registry
    equity, images = _outputs(done, "equity")
    assert images == 1 and "trades, total return" in equity

    # the notebook only reads the store: nothing written where the kernel ran
    assert list((tmp_path / "cwd").iterdir()) == []
    # stripping the executed notebook gives back the committed file, byte for byte
    done.cells = [c for c in done.cells if c.get("id") != "exe"]
    executed = tmp_path / "executed.ipynb"
    nbformat.write(done, executed)
    proc = subprocess.run([sys.executable, str(STRIP), str(executed)], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert executed.read_text() == NOTEBOOK.read_text()


@pytest.mark.slow
def test_a_missing_store_is_an_error_not_an_empty_store(tmp_path, kernel_env):
    from nbclient.exceptions import CellExecutionError

    absent = tmp_path / "nowhere" / "mlflow.db"
    kernel_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{absent}")
    with pytest.raises(CellExecutionError, match=f"no MLflow store at {absent}"):
        _execute(nbformat.read(NOTEBOOK, as_version=4), tmp_path)
    assert not absent.exists() and not absent.parent.exists()


def test_the_committed_notebook_has_no_outputs():
    """Cells only: no outputs, execution counts or run metadata (strip_outputs.py --check)."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert not any("execution" in c.metadata for c in notebook.cells)
    proc = subprocess.run(
        [sys.executable, str(STRIP), "--check", str(NOTEBOOK)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout
