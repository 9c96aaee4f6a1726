"""Strip outputs and execution counts from notebooks, so git holds only their source.

    python notebooks/strip.py                  # every notebook in notebooks/
    python notebooks/strip.py a.ipynb b.ipynb  # just these
    python notebooks/strip.py --check          # list notebooks with outputs; exit 1 if any

tests/test_notebooks.py fails when a committed notebook has outputs, so run this
before committing a notebook you have executed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
# Cell metadata written by Jupyter and nbclient when a cell runs.
RUN_METADATA = ("execution", "collapsed", "scrolled")


def strip(notebook: nbformat.NotebookNode) -> bool:
    """Remove outputs, execution counts and run metadata in place; True if anything changed."""
    changed = False
    for cell in notebook.cells:
        for key in RUN_METADATA:
            changed |= cell.metadata.pop(key, None) is not None
        if cell.cell_type != "code":
            continue
        changed |= bool(cell.outputs) or cell.execution_count is not None
        cell.outputs, cell.execution_count = [], None
    changed |= notebook.metadata.pop("widgets", None) is not None
    return changed


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("paths", nargs="*", type=Path, help="Notebooks; default: notebooks/*.ipynb.")
    parser.add_argument("--check", action="store_true", help="Change nothing; exit 1 if any has outputs.")
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths or sorted(HERE.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        if strip(notebook):
            dirty.append(path)
            if not args.check:
                nbformat.write(notebook, path)
    verb = "has outputs" if args.check else "stripped"
    for path in dirty:
        print(f"{path}: {verb}")  # noqa: T201  (a command-line script)
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
