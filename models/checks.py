"""Checks of constructor arguments, shared by the zoo and its networks.

Each check returns the value in its normal form (an int, a tuple of ints, a float) or raises an
error whose message starts with the argument's name, then says what was expected and what was
seen. A value of the wrong *type* raises `ArgumentTypeError`, a `TypeError` that is also a
`ValueError` (as numpy's `AxisError` is both a `ValueError` and an `IndexError`), so that code
catching either for "bad argument" catches it; a value of the right type but out of range
raises `ValueError`.

>>> positive_int("z_dim", 8), dims("hidden_dims", [64, 32]), finite_float("init_scale", 0.01, positive=True)
(8, (64, 32), 0.01)
>>> dims("hidden_dims", 64)
Traceback (most recent call last):
...
models.checks.ArgumentTypeError: hidden_dims: expected a sequence of positive ints such as (64,), got 64 (int)
>>> finite_float("init_scale", float("nan"), nonnegative=True)
Traceback (most recent call last):
...
ValueError: init_scale: expected a finite number >= 0, got nan
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = [
    "ArgumentTypeError",
    "positive_int",
    "int_at_least",
    "dims",
    "shape",
    "finite_float",
    "boolean",
    "one_of",
    "callable_or_none",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type: a `TypeError`, and a `ValueError` too."""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def _seen(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def int_at_least(name: str, value: Any, minimum: int) -> int:
    """`value` as an int >= `minimum` (a bool is refused: `True` is not a size)."""
    if not _is_int(value):
        raise ArgumentTypeError(f"{name}: expected an int >= {minimum}, got {_seen(value)}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """`value` as a positive int (a size: `x_dim`, `z_dim`, `num_codes`, ...)."""
    if not _is_int(value):
        raise ArgumentTypeError(f"{name}: expected a positive int, got {_seen(value)}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def dims(name: str, value: Any, *, min_len: int = 0) -> tuple[int, ...]:
    """A sequence of positive ints (layer widths, channels) as a tuple, with at least `min_len`
    entries. A bare int or a string is refused: write `(64,)` for one layer of 64."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        example = f"({value},)" if _is_int(value) else "(64,)"
        raise ArgumentTypeError(f"{name}: expected a sequence of positive ints such as {example}, got {_seen(value)}")
    out = tuple(value)
    for v in out:
        if not _is_int(v):
            raise ArgumentTypeError(f"{name}: expected a sequence of positive ints, got {value!r} (entry {_seen(v)})")
    if any(v < 1 for v in out):
        raise ValueError(f"{name}: expected a sequence of positive ints, got {value!r}")
    if len(out) < min_len:
        raise ValueError(f"{name}: expected at least {min_len} positive int(s), got {value!r}")
    return tuple(int(v) for v in out)


def shape(name: str, value: Any) -> tuple[int, ...]:
    """A data shape: a positive int (vectors) or a non-empty sequence of positive ints."""
    if _is_int(value):
        return (positive_int(name, value),)
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
        raise ArgumentTypeError(f"{name}: expected a positive int or a tuple of positive ints, got {_seen(value)}")
    return dims(name, value, min_len=1)


def finite_float(name: str, value: Any, *, positive: bool = False, nonnegative: bool = False) -> float:
    """`value` as a finite float; `positive=True` asks for > 0, `nonnegative=True` for >= 0."""
    bound = " > 0" if positive else " >= 0" if nonnegative else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name}: expected a finite number{bound}, got {_seen(value)}")
    value = float(value)
    if not math.isfinite(value) or (positive and not value > 0) or (nonnegative and not value >= 0):
        raise ValueError(f"{name}: expected a finite number{bound}, got {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    """`value` as a bool (True or False only: a switch)."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise ArgumentTypeError(f"{name}: expected True or False, got {_seen(value)}")
    return bool(value)


def one_of(name: str, value: Any, options) -> Any:
    """`value` if it is one of `options`, else a ValueError listing them."""
    options = tuple(options)
    try:
        known = value in options
    except TypeError:  # unhashable
        known = False
    if not known:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def callable_or_none(name: str, value: Any, what: str = "an nn.Module or a callable") -> Any:
    """`value` if it is None or callable (a network passed in), else a TypeError."""
    if value is not None and not callable(value):
        raise ArgumentTypeError(f"{name}: expected None or {what}, got {_seen(value)}")
    return value
