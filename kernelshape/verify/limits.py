"""Size limits of the checks, tested up front so that a large request is refused (a
ValueError saying what is allowed) before it takes the machine's memory or hours.

The costs grow with the nonlinear layers times the points of the c grid (Theorems 13 and 27:
about 0.1 s per layer at the default 1025-point grid on one core) and with the width (the
finite-width passes hold ``width x width`` weight matrices).
"""

from __future__ import annotations

from collections.abc import Sequence

from kernelshape.topology import Network

MAX_LAYER_POINTS = 1_100_000  # nonlinear layers x grid points (about 1000 layers at 1025)
MAX_WIDTH = 65_536  # the kernel-approximation study (SUO on the inputs' span: O(width))
MAX_LAYER_WIDTH = 1 << 24  # its nonlinear layers x width (time)
MAX_MATRIX_WIDTH = 4_096  # Theorem 27's finite networks (full weight matrices)


def check_grid(net: Network, points: int, what: str) -> None:
    """Refuse ``what`` when the network's nonlinear layers times ``points`` exceed the limit."""
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"{what}: the grid needs an integer number of points >= 2, "
                         f"got {points!r}")
    layers = max(1, len(net.nonlinear_nodes))
    if layers * points > MAX_LAYER_POINTS:
        raise ValueError(f"{what}: {layers} nonlinear layers x {points} grid points exceed the "
                         f"{MAX_LAYER_POINTS:,} this check allows (a few minutes); use fewer "
                         "layers (--depths) or a coarser --grid")


def check_widths(widths: Sequence[int], largest: int, what: str) -> None:
    """Refuse widths above ``largest``."""
    too_wide = [w for w in widths if w > largest]
    if too_wide:
        raise ValueError(f"{what}: width {too_wide[0]} exceeds the {largest:,} this check "
                         "allows (memory grows with the width)")
