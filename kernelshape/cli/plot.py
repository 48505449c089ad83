"""``kernelshape plot NAME|all``: figures of the gallery (``kernelshape.plots``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from kernelshape.cli.arguments import command
from kernelshape.cli.output import UsageError

EPILOG = """\
Draws a figure of the gallery to a PNG (or SVG); NAME 'all' draws every figure into the
directory given by -o. Figures: cmap-degeneration, local-maps, c-propagation, theorem13,
theorem27, kernel-approximation, training-curves (needs --run DIR).

examples:
  kernelshape plot cmap-degeneration -o degeneration.png
  kernelshape plot local-maps --activation "x*tanh(softplus(x))" -o maps.svg
  kernelshape plot all -o plots"""


def register(sub: Any) -> None:
    p = command(sub, "plot", "draw a figure of the gallery", EPILOG)
    p.add_argument("name", metavar="NAME", help="figure name, or 'all'")
    p.add_argument("-o", "--output", metavar="FILE", help="PNG/SVG file (directory for 'all')")
    p.add_argument("--svg", action="store_true", help="write SVG instead of PNG")
    p.add_argument("--quick", action="store_true", help="fewer depths/points/seeds (tests)")
    p.add_argument("--activation", default=None, help="activation of local-maps")
    p.add_argument("--run", action="append", default=[], metavar="DIR",
                   help="trainer run directory for training-curves (repeatable)")
    p.set_defaults(handler=plot, json=False)


def _target(path: str, svg: bool) -> str:
    root, ext = os.path.splitext(path)
    if svg:
        return root + ".svg"
    if ext.lower() in (".png", ".svg"):
        return path
    raise UsageError(f"output {path!r} must end in .png or .svg (or pass --svg)")


def _check_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"cannot write the figure to {path!r}: it is a directory (use a file "
                         "name, or NAME 'all' for a directory)")
    if not os.path.isdir(parent):
        raise UsageError(f"cannot write the figure to {path!r}: directory {parent!r} does not "
                         "exist")


def plot(args: argparse.Namespace) -> int:
    """kernelshape plot: 0 written, 2 bad input (message on stderr)."""
    from kernelshape.plots import FIGURES, PlotOptions, SkipFigure, draw
    from kernelshape.plots.style import pixel_size, save, style

    options = PlotOptions(quick=args.quick, activation=args.activation, runs=args.run)
    if args.name == "all":
        out_dir = args.output or "plots"
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise UsageError(f"'all' writes a directory, but {out_dir!r} is a file")
        os.makedirs(out_dir, exist_ok=True)
        ext = ".svg" if args.svg else ".png"
        for name in FIGURES:
            start = time.perf_counter()
            path = os.path.join(out_dir, name + ext)
            try:
                draw(name, path, options)
            except SkipFigure as exc:
                print(f"kernelshape plot: skipped {name}: {exc}", file=sys.stderr)
                continue
            print(f"wrote {path} ({time.perf_counter() - start:.1f} s)")
        return 0
    if args.name not in FIGURES:
        raise UsageError(f"unknown figure {args.name!r}; figures: {', '.join(FIGURES)}, or "
                         "'all'")
    path = _target(args.output or f"{args.name}.png", args.svg)
    _check_parent(path)
    start = time.perf_counter()
    try:
        with style():
            fig = FIGURES[args.name](options)
            save(fig, path)
    except SkipFigure as exc:
        raise UsageError(f"{args.name}: {exc}") from None
    w, h = pixel_size(fig)
    print(f"wrote {path} ({w}x{h} px, {time.perf_counter() - start:.1f} s)")
    return 0
