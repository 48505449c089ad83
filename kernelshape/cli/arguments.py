"""The command line's argument helpers, defined once: the parser class (exit code 2 on bad
input), argument types, and parsers for option values that carry structure."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from kernelshape.cli.output import UsageError


class Parser(argparse.ArgumentParser):
    """argparse with exit code 2 and a pointer to --help on errors."""

    def error(self, message: str) -> Any:  # noqa: D401 (argparse API)
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def command(sub: Any, name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand parser whose --help shows ``help_text`` and the examples in ``epilog``."""
    return sub.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout and nothing else there")


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argument type: an integer >= ``low`` (and <= ``high``)."""
    wanted = f"an integer >= {low}" if high is None else f"an integer between {low} and {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value

    return parse


def real(text: str) -> float:
    """An argument type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def listing(kind: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    """An argument type: a comma-separated list of ``kind`` values (``what``: plural noun)."""

    def parse(text: str) -> list[Any]:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise argparse.ArgumentTypeError(f"{exc}; give {what} separated by commas, e.g. "
                                             "0,0.5,1") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one of the {what}")
        return values

    return parse


def choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argument type: comma-separated names among ``allowed``."""

    def parse(text: str) -> list[str]:
        values = [v.strip().lower() for v in text.split(",") if v.strip()]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"choose among {', '.join(allowed)}; got {text!r}")
        return values

    return parse


def json_object(option: str, keys: Sequence[str] | None = None,
                numbers: bool = False) -> Callable[[str], dict[str, Any]]:
    """An argument type: a JSON object (its keys among ``keys``; number values)."""
    allowed = ", ".join(keys) if keys else ""

    def parse(text: str) -> dict[str, Any]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{option} is not valid JSON ({exc.msg} at column {exc.colno}); "
                             f"give an object such as '{{\"{(keys or ['key'])[0]}\": 1.2}}'"
                             + (f" with keys {allowed}" if keys else "")) from None
        except RecursionError:
            raise UsageError(f"{option} is nested too deeply to read as JSON") from None
        if not isinstance(data, dict):
            raise UsageError(f"{option} must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(keys)) if keys else []
        if unknown:
            raise UsageError(f"{option} has unknown key(s) {', '.join(unknown)}; allowed: "
                             f"{allowed}")
        if numbers:
            for key, value in data.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise UsageError(f"{option} {key} must be a number, got {value!r}")
            return {k: float(v) for k, v in data.items()}
        return data

    return parse


def key_values(items: Sequence[str], option: str) -> dict[str, float]:
    """``KEY=VALUE`` options with number values."""
    params: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} {item!r} is not KEY=VALUE, e.g. {option} "
                             "negative_slope=0.2")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise UsageError(f"{option} {key.strip()}: {value!r} is not a number") from None
    return params
