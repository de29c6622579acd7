"""pgm: Pyro programs -> graphical models -> pictures and queries; the model protocol; data.

>>> import pgm
>>> sorted(n for n in ("Model", "GraphicalModel", "graph_of", "data") if hasattr(pgm, n))
['GraphicalModel', 'Model', 'data', 'graph_of']
"""

import importlib

from pgm.extract import UNIT_LIMIT, GraphExtractionWarning, graph_of
from pgm.graph import GraphicalModel, Independence
from pgm.model import Model
from pgm.program import ProgramError

__all__ = ["Model", "GraphicalModel", "Independence", "ProgramError", "GraphExtractionWarning", "graph_of", "UNIT_LIMIT",
           "data", "pictures"]
__version__ = "0.1.0"


def __getattr__(name):
    # `pgm.data` pulls in scikit-learn and `pgm.pictures` matplotlib; load them on first use.
    if name in ("data", "pictures"):
        return importlib.import_module(f"pgm.{name}")
    raise AttributeError(f"module 'pgm' has no attribute {name!r}")
