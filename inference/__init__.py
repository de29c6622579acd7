"""Interchangeable inference engines behind one interface, the training loop and evaluation.

>>> import inference
>>> inference.ENGINES["mle"].__name__
'MaximumLikelihood'
>>> import inference.fit
>>> callable(inference.fit)
True

Public names are loaded on first use, so that ``import inference`` stays cheap; every engine
module is imported (and its engines registered) on first access to `ENGINES` or
`engines_for`.
"""

from __future__ import annotations

import importlib

# Eager, so that the package attribute `fit` is the function: importing the submodule
# `inference.fit` first would otherwise leave the module there.
from inference.fit import fit, resolve_device  # noqa: F401

#: Modules that define engines (each registers its engines on import).
ENGINE_MODULES = (
    "svi",
    "wake_sleep",
    "mcmc",
    "gibbs",
    "langevin",
    "contrastive_divergence",
    "score_matching",
    "nce",
    "maximum_likelihood",
    "objective",
    "reverse_kl",
    "adversarial",
    "diffusion",
)

_EXPORTS = {
    "Engine": "engine",
    "EngineError": "engine",
    "NonFiniteLossError": "engine",
    "register_engine": "engine",
    "SVI": "svi",
    "WakeSleep": "wake_sleep",
    "MCMC": "mcmc",
    "Gibbs": "gibbs",
    "Langevin": "langevin",
    "ContrastiveDivergence": "contrastive_divergence",
    "ScoreMatching": "score_matching",
    "NCE": "nce",
    "FlowContrastive": "nce",
    "MaximumLikelihood": "maximum_likelihood",
    "Objective": "objective",
    "ReverseKL": "reverse_kl",
    "AutoFlow": "svi",
    "Adversarial": "adversarial",
    "Diffusion": "diffusion",
    "Sampler": "sampler",
    "Posterior": "posterior",
    "History": "history",
}

__all__ = sorted([*_EXPORTS, "ENGINES", "engines_for", "evaluate", "metrics", "load_engines", "fit", "resolve_device"])


def load_engines() -> dict:
    """Import every engine module (registering its engines); returns the registry."""
    for name in ENGINE_MODULES:
        try:
            importlib.import_module(f"inference.{name}")
        except ModuleNotFoundError as e:  # only a module not written yet; errors inside one propagate
            if e.name != f"inference.{name}":
                raise
    from inference.engine import ENGINES

    return ENGINES


def engines_for(model) -> dict:
    """Every engine by class name, mapped to None if it applies to `model`, else to the reason
    it does not (see `inference.engine.engines_for`)."""
    load_engines()
    from inference.engine import engines_for as _engines_for

    return _engines_for(model)


def __getattr__(name: str):
    if name == "ENGINES":
        return load_engines()
    if name in ("evaluate", "checkpoint", "distributed", "partition", "engine", "sampler", "posterior", "history",
                "metrics"):
        return importlib.import_module(f"inference.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'inference' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"inference.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
