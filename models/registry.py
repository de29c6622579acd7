"""The zoo's registry: names the command line and `models.get` use."""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["register", "available", "get", "entry"]

_REGISTRY: dict[str, tuple[type, dict[str, Any], str]] = {}


def register(name: str, **defaults: Any) -> Callable[[type], type]:
    """Class decorator: register a zoo model under `name`, built by `get(name)` with
    `defaults` (overridable by keyword)."""

    def wrap(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name][0] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_REGISTRY[name][0].__name__}")
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        _REGISTRY[name] = (cls, dict(defaults), summary)
        cls.name = name
        return cls

    return wrap


def available() -> list[str]:
    """Names of the registered zoo models, sorted."""
    return sorted(_REGISTRY)


def entry(name: str) -> tuple[type, dict[str, Any], str]:
    """(class, default keyword arguments, one-line description) of a registered model."""
    if name not in _REGISTRY:
        raise ValueError(f"name: unknown model {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def get(name: str, **kwargs: Any):
    """An instance of the registered model `name`, with its defaults updated by `kwargs`.

    >>> import models
    >>> type(models.get("burglary")).__name__
    'Burglary'
    """
    cls, defaults, _ = entry(name)
    return cls(**{**defaults, **kwargs})
