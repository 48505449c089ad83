"""Topology benchmarks (issue 3): run ``python -m benchmarks.bench_topology``.

Times, for the ResNet-200 V2 description (shortcut weight 0.6): building it, 1,000 evaluations
of the maximal slope function (scalar calls and one vectorized call), the subnetwork
maximizing function with a leaky-ReLU C map, the whole-network C map at 10^4 points, and the
memory the description holds. Goal: each time under 50 ms. Times are the median of repeats,
after a warm-up call (first-call costs, such as building a map interpolant, are listed apart).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from kernelshape.engine.activations import Transform
from kernelshape.topology import nets

GOAL_MS = 50.0
DEPTH = 200
SHORTCUT_WEIGHT = 0.6
# dks regression constants for softplus (DKS, ResNet-101 V2, w = 0.6, zeta = 1.2): Q(1) = 1
DKS_SOFTPLUS = Transform(input_scale=0.18761008168267976, input_shift=0.40688063442262007,
                         output_shift=-0.9213466151411376, output_scale=8.878672543665223)


def median_ms(fn: Callable[[], object], repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def first_call_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start)


def leaky_relu_cmap(negative_slope: float) -> Callable[[np.ndarray], np.ndarray]:
    k = (1 - negative_slope) ** 2 / (math.pi * (1 + negative_slope**2))
    return lambda c: c + k * (np.sqrt(1 - c * c) - c * np.arccos(np.clip(c, -1.0, 1.0)))


def description_memory_kib() -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    net = nets.resnet(DEPTH, shortcut_weight=SHORTCUT_WEIGHT)
    net.max_slope(1.0)  # includes the compiled subnetwork programs
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del net
    return held / 1024


def main() -> None:
    nets.mlp(1)  # imports the activation registry once (sympy), outside the timings
    relu_net = nets.resnet(DEPTH, shortcut_weight=SHORTCUT_WEIGHT, activation="relu")
    softplus_net = nets.resnet(DEPTH, shortcut_weight=SHORTCUT_WEIGHT, activation="softplus")
    xis = np.linspace(1.0, 1.01, 1000)
    c = np.linspace(-1.0, 1.0, 10_000)
    relu_he = {"relu": Transform(output_scale=math.sqrt(2.0))}
    dks = {"softplus": DKS_SOFTPLUS}
    lrelu = leaky_relu_cmap(0.5)

    def scalar_slopes() -> None:
        for xi in xis:
            relu_net.max_slope(float(xi))

    rows = [
        ("build resnet-200 description", median_ms(
            lambda: nets.resnet(DEPTH, shortcut_weight=SHORTCUT_WEIGHT)), True),
        ("max_slope x1000, scalar calls", median_ms(scalar_slopes), True),
        ("max_slope x1000, one array call", median_ms(lambda: relu_net.max_slope(xis)), True),
        ("subnet_max(0, leaky-ReLU C map), 1 call", median_ms(
            lambda: relu_net.subnet_max(0.0, lrelu)), True),
        ("subnet_max at 1000 x, 1 call", median_ms(
            lambda: relu_net.subnet_max(np.linspace(0, 1, 1000), lrelu)), True),
        ("cmap 1e4 points, relu (closed form)", median_ms(
            lambda: relu_net.cmap(c, transforms=relu_he)), True),
        ("cmap 1e4 points, DKS softplus, warm", median_ms(
            lambda: softplus_net.cmap(c, transforms=dks), repeats=3), True),
        ("cmap order=1 at c=1, DKS softplus", median_ms(
            lambda: softplus_net.cmap(1.0, order=1, transforms=dks), repeats=3), False),
    ]
    first = first_call_ms(lambda: nets.resnet(DEPTH, shortcut_weight=SHORTCUT_WEIGHT,
                                              activation="tanh").cmap(c))
    memory = description_memory_kib()
    print(f"kernelshape topology benchmark: resnet-{DEPTH} V2, shortcut_weight "
          f"{SHORTCUT_WEIGHT}, {len(relu_net.nodes)} nodes, "
          f"{len(relu_net.nonlinear_nodes)} nonlinear layers")
    print(f"{'what':44s} {'ms':>10s}  goal")
    for name, ms, has_goal in rows:
        verdict = ("ok" if ms < GOAL_MS else "MISSED") if has_goal else "-"
        print(f"{name:44s} {ms:10.2f}  {verdict}")
    print(f"{'cmap 1e4 points, tanh, first call (cold)':44s} {first:10.2f}  -")
    print(f"{'memory held by the description (KiB)':44s} {memory:10.1f}  -")


if __name__ == "__main__":
    main()
