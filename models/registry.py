"""The zoo's registry: names the command line and `models.get` use.

Each entry has two sets of sizes, kept apart: the small *drawing* defaults that `models.get`
and `pgm draw` use (a 6x4 RBM reads as a picture), and a *training preset* (`Preset`) that
`pgm train NAME` uses when no flag says otherwise, chosen so that the command alone gives a
model a person would accept in a few CPU minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

__all__ = ["register", "available", "get", "entry", "preset", "Preset"]


@dataclass(frozen=True)
class Preset:
    """How `pgm train NAME` trains a registered model by default.

    - `settings`: constructor keywords for training (sizes), over the drawing defaults;
    - `engine`: a command-line engine name (`inference.choice.ENGINE_PRESETS`), or None for the
      first that applies (`inference.choice.default_engine`);
    - `engine_settings`: engine keywords (`--engine-set`);
    - `data`: a `pgm.data` name, or None for the data the model carries (`model.own_data()`);
    - `data_settings`: `pgm.data.load` keywords (`--data-set`);
    - `epochs`, `batch_size`, `lr` (None: the engine's default learning rate);
    - `variants`: for another data set, the fields that change: `{data name: {field: value}}`.
      `pgm train gan --data 8gaussians` trains with the `8gaussians` variant, whose `settings`,
      `engine_settings` and `data_settings` update the preset's and whose other fields replace
      them (`Preset.for_data`).

    >>> Preset(epochs=5).data
    'digits'
    >>> p = Preset(settings={"z_dim": 32}, epochs=5,
    ...            variants={"moons": dict(settings={"x_dim": 2}, epochs=50)})
    >>> v = p.for_data("moons")
    >>> (v.data, v.settings, v.epochs), p.for_data("digits") is p
    (('moons', {'z_dim': 32, 'x_dim': 2}, 50), True)
    """

    settings: dict[str, Any] = field(default_factory=dict)
    engine: str | None = None
    engine_settings: dict[str, Any] = field(default_factory=dict)
    data: str | None = "digits"
    data_settings: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int | None = 128
    lr: float | None = None
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = {f.name for f in fields(self)} - {"variants", "data"}
        for data, changes in self.variants.items():
            if not isinstance(changes, dict):
                raise TypeError(f"train: variants[{data!r}] must be a dict of preset fields, "
                                f"got {type(changes).__name__}")
            unknown = sorted(set(changes) - known)
            if unknown:
                raise TypeError(f"train: variants[{data!r}] has unknown fields {unknown}; "
                                f"expected some of {sorted(known)}")

    def for_data(self, data: str | None) -> "Preset":
        """The preset for training on `data`: itself when `data` is its own data set or has no
        variant, else with the variant's changes (dict fields updated, others replaced)."""
        if data is None or data == self.data or data not in self.variants:
            return self
        changes = dict(self.variants[data])
        for key in ("settings", "engine_settings"):
            if key in changes:
                changes[key] = {**getattr(self, key), **changes[key]}
        # data settings belong to a data set: the variant's own, never the preset's data's.
        changes.setdefault("data_settings", {})
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes, data=data, variants={})
        return Preset(**values)

    @classmethod
    def of(cls, spec: "Preset | dict[str, Any] | None") -> "Preset":
        """A `Preset` from a dict of its fields (unknown keys are an error), or the default."""
        if spec is None:
            return cls()
        if isinstance(spec, cls):
            return spec
        if not isinstance(spec, dict):
            raise TypeError(f"train: expected a Preset or a dict of its fields, got {type(spec).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise TypeError(f"train: unknown preset fields {unknown}; expected some of {sorted(known)}")
        return cls(**spec)


_REGISTRY: dict[str, tuple[type, dict[str, Any], str]] = {}
_PRESETS: dict[str, Preset] = {}


def register(name: str, *, train: Preset | dict[str, Any] | None = None, **defaults: Any) -> Callable[[type], type]:
    """Class decorator: register a zoo model under `name`, built by `get(name)` with the
    drawing `defaults` (overridable by keyword), and trained by `pgm train NAME` with the
    `train` preset (a `Preset` or a dict of its fields)."""
    train_preset = Preset.of(train)

    def wrap(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name][0] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_REGISTRY[name][0].__name__}")
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        _REGISTRY[name] = (cls, dict(defaults), summary)
        _PRESETS[name] = train_preset
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


def preset(name: str, data: str | None = None) -> Preset:
    """The training preset of the registered model `name`, for the data set `data` when given
    (its variant for that data, `Preset.for_data`).

    >>> import models
    >>> models.preset("rbm").settings["h_dim"] >= 64
    True
    """
    entry(name)
    return _PRESETS[name].for_data(data)


def get(name: str, **kwargs: Any):
    """An instance of the registered model `name`, with its defaults updated by `kwargs`.

    >>> import models
    >>> type(models.get("burglary")).__name__
    'Burglary'
    """
    cls, defaults, _ = entry(name)
    return cls(**{**defaults, **kwargs})
