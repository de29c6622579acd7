"""Every tutorial notebook runs top to bottom (code cells executed in order in one namespace,
in a temporary folder, with `PGM_TUTORIAL_SHORT=1` so that training cells take short runs)."""

import json
from pathlib import Path

import matplotlib
import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PGM_TUTORIAL_SHORT", "1")
    notebook = json.loads(path.read_text())
    namespace = {"__name__": "__main__"}
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)
        finally:
            plt.close("all")


def test_there_are_tutorials():
    assert TUTORIALS, "tutorials/ holds no notebooks"
    for path in TUTORIALS:
        notebook = json.loads(path.read_text())
        assert notebook["nbformat"] == 4
        assert all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code"), (
            f"{path.name}: commit notebooks without outputs"
        )
