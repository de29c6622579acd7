"""Shared test setup: a headless matplotlib backend and a clean Pyro state per test."""

import matplotlib

matplotlib.use("Agg")

import pyro  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def clean_pyro_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
