"""Strip a notebook's outputs before committing it: outputs, execution counts, run metadata.

    .venv/bin/python notebooks/strip_outputs.py                  # every notebooks/*.ipynb
    .venv/bin/python notebooks/strip_outputs.py path.ipynb ...   # these notebooks
    .venv/bin/python notebooks/strip_outputs.py --check          # exit 1 if one has outputs

A committed notebook holds its cells only: figures and tables belong to the store they were
made from (tests/test_notebook.py checks notebooks/compare_runs.ipynb is stripped).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent
# what executing adds to a cell's metadata (nbclient's timings, Jupyter's display state)
RUN_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def strip(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook without outputs, execution counts or run metadata (changed in place)."""
    for cell in notebook.cells:
        for key in RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    # the kernel's language_info (Python version, ...) is filled in by whoever ran it last
    notebook.metadata["language_info"] = {"name": "python"}
    notebook.metadata.pop("widgets", None)
    return notebook


def stripped_text(path: Path) -> str:
    """The file as it should be committed (nbformat's layout, as ``ruff format`` keeps it)."""
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    return nbformat.writes(strip(notebook)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if needed")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("*.ipynb"))
    dirty = []
    for path in paths:
        text = stripped_text(path)
        if path.read_text() == text:
            continue
        dirty.append(path)
        if not args.check:
            path.write_text(text)
    verb = "has outputs" if args.check else "stripped"
    for path in dirty:
        print(f"{path}: {verb}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
