"""Output helpers of the command line: errors, number formatting, tables, JSON, progress."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import mpmath


class UsageError(Exception):
    """Bad input from the user: exit code 2, message on stderr."""


class Unavailable(Exception):
    """A part of kernelshape that is not installed or not written yet: exit code 1."""


def is_mp(value: Any) -> bool:
    """True for mpmath numbers."""
    return isinstance(value, mpmath.mpf | mpmath.mpc)


def fmt(value: Any, dps: int | None = None) -> str:
    """A number as text: floats at round-trip precision, mpmath numbers with their digits."""
    if is_mp(value):
        return mpmath.nstr(value, dps or mpmath.mp.dps)
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return repr(number)


def fmt_short(value: Any, digits: int = 3) -> str:
    """A residual or tolerance in short scientific notation."""
    if is_mp(value):
        return mpmath.nstr(value, digits)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.{digits - 1}e}" if math.isfinite(number) else fmt(number)


def jsonable(value: Any, dps: int | None = None) -> Any:
    """Plain JSON data: mpmath numbers become digit strings, inf/nan become strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, dps) for k, v in value.items()}
    if isinstance(value, str | bool) or value is None:
        return value
    if is_mp(value):
        return fmt(value, dps)
    if isinstance(value, int):
        return value
    if hasattr(value, "tolist") and not isinstance(value, float):
        return jsonable(value.tolist(), dps)
    if isinstance(value, Sequence | set | frozenset):
        return [jsonable(v, dps) for v in value]
    if isinstance(value, float) or hasattr(value, "__float__"):
        number = float(value)
        return number if math.isfinite(number) else fmt(number)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def dump_json(payload: Mapping[str, Any], stream: TextIO, dps: int | None = None) -> None:
    """Write exactly one JSON object (and a newline) to ``stream``."""
    stream.write(json.dumps(jsonable(payload, dps), indent=2, allow_nan=False) + "\n")
    stream.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> str:
    """An aligned plain-text table (cells are already text)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        text = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        lines.append(indent + text)
        if n == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check_output_path(path: str, what: str, inputs: tuple[str, ...] = ()) -> Path:
    """Refuse (before any long work) an output path that cannot be written, that is not a
    regular file, or that is one of the command's ``inputs``."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"cannot write the {what} to {path!r}: it is a directory; give a file "
                         "name, e.g. -o constants.json")
    if target.exists() and not target.resolve().is_file():
        raise UsageError(f"cannot write the {what} to {path!r}: it exists and is not a regular "
                         "file (a device or pipe); give the path of a regular file")
    for source in inputs:
        if target.exists() and Path(source).exists() and os.path.samefile(target, source):
            raise UsageError(f"cannot write the {what} to {path!r}: it is the input file "
                             f"{source!r}; choose another output path")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist"
        raise UsageError(f"cannot write the {what} to {path!r}: directory {str(parent)!r} {why}; "
                         "create it first or choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the {what} to {path!r}: directory {str(parent)!r} is "
                         "not writable")
    return target


def check_output_dir(path: str, what: str) -> Path:
    """A directory that exists and is writable, or can be created (with its parents)."""
    target = Path(path)
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.exists():
        existing = Path(".")
    if not existing.is_dir():
        raise UsageError(f"cannot use {path!r} as the {what}: {str(existing)!r} is a file, "
                         "not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot use {path!r} as the {what}: {str(existing)!r} is not writable")
    return target


class Progress:
    """A spinner with elapsed seconds on stderr, drawn only when stderr is a terminal."""

    FRAMES = "|/-\\"

    def __init__(self, label: str, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled
        self.label = label
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._width = 0
        self._start = 0.0

    def update(self, label: str) -> None:
        """Change the text next to the spinner."""
        self.label = label

    def _draw(self, frame: str) -> None:
        text = f"{frame} {self.label}  {time.perf_counter() - self._start:5.1f} s"
        pad = max(self._width - len(text), 0)
        self._width = len(text)
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(0.1):
            self._draw(self.FRAMES[n % len(self.FRAMES)])
            n += 1

    def __enter__(self) -> Progress:
        self._start = time.perf_counter()
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start
