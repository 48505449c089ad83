"""Figure style: Okabe-Ito colour-blind-safe palette, readable fonts, fixed pixel sizes.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly (no pyplot,
no global backend switch), saved at ``DPI`` without tight cropping so that a figure of
``figsize = (w, h)`` inches is exactly ``w*DPI x h*DPI`` pixels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cycler import cycler
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kernelshape.constants import atomic_write

DPI = 100

# Okabe & Ito (2008), "Color Universal Design"; yellow (#F0E442) is left out of line plots
# because it is hard to see on white.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}
CYCLE = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), "-"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
REFERENCE = "#7F7F7F"  # grey for identity lines and bounds

RC = {
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 10,
    "figure.titlesize": 15,
    "lines.linewidth": 1.8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.prop_cycle": cycler(color=CYCLE),
    "svg.fonttype": "none",
}


@contextmanager
def style() -> Iterator[None]:
    """The gallery's rcParams, for building and saving one figure."""
    with rc_context(RC):
        yield


def new_figure(width: float, height: float, **kwargs: Any) -> Figure:
    """A Figure of ``width x height`` inches with constrained layout and an Agg canvas."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | os.PathLike[str]) -> str:
    """Write the figure (PNG, or SVG for a ``.svg`` path) at ``DPI``; returns the path."""
    path = os.fspath(path)
    fmt = "svg" if path.lower().endswith(".svg") else "png"
    atomic_write(path, lambda handle: fig.savefig(
        handle, dpi=DPI, format=fmt,
        metadata={"Software": "kernelshape"} if fmt == "png" else None), binary=True)
    return path


def pixel_size(fig: Figure) -> tuple[int, int]:
    """(width, height) in pixels of the saved PNG."""
    w, h = fig.get_size_inches()
    return round(w * DPI), round(h * DPI)
