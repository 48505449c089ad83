"""The figure gallery (the command line: ``kernelshape plot NAME -o FILE``, ``plot all -o DIR``).

```python
from kernelshape.plots import draw, FIGURES
draw("cmap-degeneration", "degeneration.png")      # PNG; a .svg path gives SVG
```
Figures: cmap-degeneration, local-maps, c-propagation, theorem13, theorem27,
kernel-approximation, training-curves (needs ``--run DIR``). See docs/theory.md.
"""

from __future__ import annotations

import os
from typing import Any

from kernelshape.plots.figures import FIGURES, PlotOptions, SkipFigure
from kernelshape.plots.style import save, style

__all__ = ["FIGURES", "PlotOptions", "SkipFigure", "draw", "figure"]


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
