"""Execute the tutorial notebooks and store them with their outputs.

    python tutorials/run.py                     # every tutorial, full runs, outputs stored in place
    python tutorials/run.py tutorials/04_*.ipynb
    python tutorials/run.py --short --out DIR   # short runs (PGM_TUTORIAL_SHORT=1), copies in DIR

Each notebook runs top to bottom in a fresh kernel (the `python3` kernel of the Python that runs
this script: install the project's test extra, which brings nbclient and ipykernel), with a
temporary folder as its working directory so that the files it writes do not land in the
repository. Outputs are stored without the volatile metadata (timings), so that a rerun changes
only what the notebook shows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

__all__ = ["execute", "main"]


def execute(path: Path, out: Path | None = None, *, short: bool = False, timeout: int = 1800) -> Path:
    """Run the notebook at `path` and write it, with its outputs, to `out` (default: in place)."""
    import nbformat
    from nbclient import NotebookClient

    from nbformat.validator import normalize

    notebook = nbformat.read(path, as_version=4)
    notebook = nbformat.from_dict(normalize(notebook)[1])  # cell ids, as nbformat 5 wants them
    environment = {"PGM_TUTORIAL_SHORT": "1" if short else "0", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    previous = {k: os.environ.get(k) for k in (*environment, "PYTHONPATH")}
    os.environ.update(environment)
    # The kernel imports the project from this checkout, installed or not.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), previous["PYTHONPATH"]) if p)
    try:
        with tempfile.TemporaryDirectory(prefix="pgm-tutorial-") as folder:
            client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": folder}})
            client.execute()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    for cell in notebook.cells:
        cell.get("metadata", {}).pop("execution", None)
    notebook.metadata.pop("widgets", None)
    target = path if out is None else out
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: every tutorial)")
    parser.add_argument("--short", action="store_true", help="short runs (PGM_TUTORIAL_SHORT=1)")
    parser.add_argument("--out", type=Path, default=None, help="write executed copies into this folder instead")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(HERE.glob("*.ipynb"))
    for path in notebooks:
        start = time.perf_counter()
        target = execute(path, None if args.out is None else args.out / path.name, short=args.short)
        print(f"{path.name}: {time.perf_counter() - start:.0f} s -> {target}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
