"""Doctests run from the package folders: give them the same headless backend as the tests."""

import matplotlib

matplotlib.use("Agg")
