"""The figure gallery: ``kernelshape plot NAME -o FILE`` and ``kernelshape plot all -o DIR``.

```python
from kernelshape.plots import draw, FIGURES
draw("cmap-degeneration", "degeneration.png")      # PNG; a .svg path gives SVG
```
Figures: cmap-degeneration, local-maps, c-propagation, theorem13, theorem27,
kernel-approximation, training-curves (needs ``--run DIR``). See docs/theory.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from kernelshape.plots.figures import FIGURES, PlotOptions, SkipFigure
from kernelshape.plots.style import pixel_size, save, style

__all__ = ["FIGURES", "PlotOptions", "SkipFigure", "draw", "figure", "run_cli"]


def figure(name: str, options: PlotOptions | None = None) -> Any:
    """The matplotlib Figure ``name`` (not saved)."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; figures: {', '.join(FIGURES)}, or 'all'")
    with style():
        return FIGURES[name](options or PlotOptions())


def draw(name: str, path: str | os.PathLike[str], options: PlotOptions | None = None) -> str:
    """Draw figure ``name`` into ``path`` (PNG, or SVG for a ``.svg`` suffix); returns the path."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; figures: {', '.join(FIGURES)}, or 'all'")
    with style():
        fig = FIGURES[name](options or PlotOptions())
        return save(fig, path)


class _BadInput(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # noqa: D401 (argparse API)
        raise _BadInput(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kernelshape plot", add_help=False)
    p.add_argument("--svg", action="store_true", help="write SVG instead of PNG")
    p.add_argument("--quick", action="store_true", help="fewer depths/points/seeds (tests)")
    p.add_argument("--activation", default=None, help="activation of local-maps")
    p.add_argument("--run", action="append", default=[], metavar="DIR",
                   help="trainer run directory for training-curves (repeatable)")
    return p


def _target(path: str, svg: bool) -> str:
    root, ext = os.path.splitext(path)
    if svg:
        return root + ".svg"
    if ext.lower() in (".png", ".svg"):
        return path
    raise _BadInput(f"output {path!r} must end in .png or .svg (or pass --svg)")


def _check_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise _BadInput(f"cannot write the figure to {path!r}: it is a directory (use a file "
                        "name, or NAME 'all' for a directory)")
    if not os.path.isdir(parent):
        raise _BadInput(f"cannot write the figure to {path!r}: directory {parent!r} does not "
                        "exist")


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``kernelshape plot``: 0 written, 2 bad input (message on stderr)."""
    prog = "kernelshape plot"
    name = getattr(args, "name", None)
    try:
        opts = _parser().parse_args(list(getattr(args, "extra", None) or []))
        options = PlotOptions(quick=opts.quick, activation=opts.activation, runs=opts.run)
        output = getattr(args, "output", None)
        if name == "all":
            out_dir = output or "plots"
            if os.path.exists(out_dir) and not os.path.isdir(out_dir):
                raise _BadInput(f"'all' writes a directory, but {out_dir!r} is a file")
            os.makedirs(out_dir, exist_ok=True)
            ext = ".svg" if opts.svg else ".png"
            for fig_name in FIGURES:
                start = time.perf_counter()
                path = os.path.join(out_dir, fig_name + ext)
                try:
                    draw(fig_name, path, options)
                except SkipFigure as exc:
                    print(f"{prog}: skipped {fig_name}: {exc}", file=sys.stderr)
                    continue
                print(f"wrote {path} ({time.perf_counter() - start:.1f} s)")
            return 0
        if name not in FIGURES:
            raise _BadInput(f"unknown figure {name!r}; figures: {', '.join(FIGURES)}, or 'all'")
        path = _target(output or f"{name}.png", opts.svg)
        _check_parent(path)
        start = time.perf_counter()
        with style():
            fig = FIGURES[name](options)
            save(fig, path)
        w, h = pixel_size(fig)
        print(f"wrote {path} ({w}x{h} px, {time.perf_counter() - start:.1f} s)")
        return 0
    except SkipFigure as exc:
        print(f"{prog}: {name}: {exc}", file=sys.stderr)
        return 2
    except (_BadInput, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
