"""The `pgm` command line: list, draw, train, sample and evaluate models.

This is the one module that wires `pgm`, `models` and `inference` together; it imports them
lazily so that `pgm --help` stays fast.

    pgm list
    pgm draw rbm -o rbm.png --units --set v_dim=4 --set h_dim=3
    pgm draw mypackage.mymodule:my_program -o graph.svg
"""

from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser", "resolve_model"]


class CommandError(Exception):
    """A user error on the command line: printed as one line, exit status 2."""


def parse_settings(items: Sequence[str] | None) -> dict[str, Any]:
    """`["v_dim=4", "hidden_dims=(64, 64)"]` -> `{"v_dim": 4, "hidden_dims": (64, 64)}`.

    >>> parse_settings(["v_dim=4", "likelihood=gaussian", "hidden_dims=(8, 8)"])
    {'v_dim': 4, 'likelihood': 'gaussian', 'hidden_dims': (8, 8)}
    """
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise CommandError(f"--set: expected KEY=VALUE with KEY a Python name, got {item!r}")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def resolve_model(spec: str, settings: dict[str, Any] | None = None):
    """A model from a registered zoo name or `module:attribute`.

    The attribute may be a `pgm.Model` instance, a `pgm.Model` subclass (built with
    `settings`), or a Pyro program that takes no required arguments.
    """
    import models
    import pgm

    settings = settings or {}
    if ":" not in spec:
        if spec not in models.available():
            raise CommandError(
                f"MODEL: unknown model {spec!r}; registered: {', '.join(models.available())} "
                "(or give module:function for your own program)"
            )
        try:
            return models.get(spec, **settings)
        except TypeError as error:
            raise CommandError(f"--set: {spec} does not accept these settings: {error}") from error
    module_name, _, attr = spec.partition(":")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"MODEL: cannot import module {module_name!r}: {error}") from error
    finally:
        sys.path.pop(0)
    if not hasattr(module, attr):
        raise CommandError(f"MODEL: module {module_name!r} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if isinstance(obj, type) and issubclass(obj, pgm.Model):
        return obj(**settings)
    if settings:
        raise CommandError(f"--set: settings apply to registered models and Model classes, not to {spec}")
    if isinstance(obj, pgm.Model) or callable(obj):
        return obj
    raise CommandError(f"MODEL: {spec} is a {type(obj).__name__}, not a pgm.Model or a Pyro program")


def cmd_list(args: argparse.Namespace) -> int:
    import models

    names = models.available()
    width = max(map(len, names), default=0)
    for name in names:
        cls, defaults, doc = models.entry(name)
        print(f"{name:<{width}}  {cls.__name__:<20} {doc}")
    return 0


def cmd_draw(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import pgm

    model = resolve_model(args.model, parse_settings(args.set))
    level = "unit" if args.units else "site"
    graph = pgm.graph_of(model, level=level, show_params=args.params, unit_limit=args.unit_limit)
    if args.factor_graph:
        graph = graph.factor_graph()
    out = Path(args.output)
    if out.suffix.lower() == ".dot":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(graph.to_dot())
    else:
        graph.draw(out, title=args.title)
    print(f"{graph!r} -> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgm", description="Declarative deep generative models on Pyro: draw, train, sample, evaluate."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list the registered zoo models")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("draw", help="draw a model's graphical model to a file")
    p.add_argument("model", metavar="MODEL", help="a registered name (see `pgm list`) or module:function")
    p.add_argument("-o", "--output", required=True, help="output file: .png, .svg, .pdf, or .dot")
    p.add_argument("--units", action="store_true", help="one node per unit instead of per site")
    p.add_argument("--factor-graph", action="store_true", help="draw the factor-graph view")
    p.add_argument("--params", action="store_true", help="show parameters as nodes")
    p.add_argument("--unit-limit", type=int, default=1024, help="largest site expanded with --units")
    p.add_argument("--title", default=None, help="a title above the drawing")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model constructor setting (repeatable)")
    p.set_defaults(func=cmd_draw)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as error:
        print(f"pgm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"pgm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
