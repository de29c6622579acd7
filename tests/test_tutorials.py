"""Every tutorial notebook is stored with the outputs of a full run, and runs top to bottom in
short mode (`PGM_TUTORIAL_SHORT=1`): executed by `tutorials/run.py` in a fresh kernel, from a
copy, in a temporary folder."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("*.ipynb"))


def _runner():
    spec = importlib.util.spec_from_file_location("tutorials_run", ROOT / "tutorials" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_short_mode(path, tmp_path):
    copy = _runner().execute(path, tmp_path / path.name, short=True, timeout=900)
    notebook = json.loads(copy.read_text())
    errors = [o for c in notebook["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_is_stored_with_the_outputs_of_a_full_run(path):
    notebook = json.loads(path.read_text())
    assert notebook["nbformat"] == 4
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    unexecuted = [i for i, c in enumerate(code) if c.get("execution_count") is None and "".join(c["source"]).strip()]
    assert not unexecuted, f"{path.name}: code cells {unexecuted} have no stored run; run `python tutorials/run.py {path.name}`"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: no stored picture"
    assert not any(o.get("output_type") == "error" for o in outputs), f"{path.name}: a stored run failed"
    counts = [c["execution_count"] for c in code if c.get("execution_count") is not None]
    assert counts == sorted(counts), f"{path.name}: cells were run out of order"


def test_there_are_tutorials():
    assert len(TUTORIALS) >= 3
