"""Shaping-solver benchmark (issue 4): ``python -m benchmarks.bench_solve``.

Solves the same requests with kernelshape and with the official ``dks`` package: its 16
activations x DKS/TAT x {mlp-100, resnet-101 (V2, shortcut weight 0.6)} at the default
targets (zeta = 1.5, tau = 0.3, eta = 0.9). Reported per request:

* ``ks ms``: ``ks.shape(<network built from its description>, method)``, i.e. building the
  network description is part of the request; ``compat ms``: the same request through
  ``kernelshape.compat.dks.get_activations_params`` with the hand-written ``subnet_max_func``
  the official package needs; ``dks ms``: ``dks.base.activation_transform._get_activations_params``
  with that same function. All are warm (one untimed run of each request first: kernelshape
  then holds its compiled activation functions, dks its Legendre roots) and are the median
  of ``--repeats`` runs; ``kernelshape.engine.maps.clear_caches()`` runs before every kernelshape
  request, so no answer is reused across requests.
* ``ks res`` / ``dks res``: max |value - target| over the local conditions of the request,
  recomputed by ``kernelshape.engine.precise`` at ``--dps`` digits for both sets of constants, with
  the exact local target (xi, tau_local) of the network; TAT Leaky-ReLU adds the network
  condition ``max_f C_f(0) - eta``.

The official package runs in a side virtual environment (never the project's)::

    python3.11 -m venv /tmp/dksenv && /tmp/dksenv/bin/pip install dks autograd absl-py

and is found through ``--dks-python`` or ``$KERNELSHAPE_DKS_PYTHON`` (default
``/tmp/dksenv/bin/python``); without it the official columns are skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kernelshape as ks
from kernelshape.compat import dks as compat
from kernelshape.engine import maps
from kernelshape.solve.network_targets import (
    dks_local_slope,
    leaky_relu_cmap,
    tat_local_curvature,
)
from kernelshape.topology import nets

ACTIVATIONS = ("tanh", "sigmoid", "erf", "relu", "softplus", "selu", "elu", "swish", "bentid",
               "atan", "asinh", "square", "softsign", "leaky_relu", "gelu", "gelu_exact")
METHODS = ("DKS", "TAT")
NETWORKS = ("mlp-100", "resnet-101")
SHORTCUT_WEIGHT = 0.6
DEFAULT_DKS_PYTHON = "/tmp/dksenv/bin/python"

# The worker runs inside the side environment. It receives the requests as JSON on stdin and
# prints one JSON line per request: params or error, and the warm times.
WORKER = r'''
import json, logging, signal, statistics, sys, time, warnings
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
from dks.base import activation_transform as at

def chain(depth):
    def m(x, r):
        for _ in range(depth):
            x = r(x)
        return x
    return m

def resnet101(x, r, w=%(w)r):
    branch = r(r(r(x)))
    for blocks in (3, 4, 23, 3):
        for j in range(blocks):
            res = r(r(r(x)))
            x = w * w * (r(x) if j == 0 else x) + (1.0 - w * w) * res
    return max(r(x), branch)

NETS = {"mlp-100": chain(100), "resnet-101": resnet101}

class Timeout(Exception):
    pass

def alarm(signum, frame):
    raise Timeout()

signal.signal(signal.SIGALRM, alarm)
config = json.loads(sys.stdin.read())
for req in config["requests"]:
    out = dict(req)
    times = []
    try:
        for i in range(1 + config["repeats"]):
            signal.alarm(config["timeout"])
            start = time.perf_counter()
            params = at._get_activations_params(
                (req["activation"],), method=req["method"], subnet_max_func=NETS[req["net"]])
            elapsed = time.perf_counter() - start
            signal.alarm(0)
            if i:
                times.append(elapsed)
        out["params"] = {k: float(v) for k, v in params[req["activation"]].items()}
        out["seconds"] = statistics.median(times)
    except Timeout:
        out["error"] = "timeout after %%d s" %% config["timeout"]
    except Exception as exc:
        signal.alarm(0)
        out["error"] = "%%s: %%s" %% (type(exc).__name__, str(exc)[:120])
    print(json.dumps(out), flush=True)
'''


def official_subnet_max(name: str) -> Callable[[float, Callable[[float], float]], float]:
    """The hand-written subnetwork maximizing functions (dks convention)."""
    if name == "mlp-100":
        def chain(x: float, r: Callable[[float], float]) -> float:
            for _ in range(100):
                x = r(x)
            return x
        return chain

    def resnet101(x: float, r: Callable[[float], float], w: float = SHORTCUT_WEIGHT) -> float:
        branch = r(r(r(x)))
        for blocks in (3, 4, 23, 3):
            for j in range(blocks):
                res = r(r(r(x)))
                x = w * w * (r(x) if j == 0 else x) + (1.0 - w * w) * res
        return max(r(x), branch)
    return resnet101


def build(name: str, activation: str) -> ks.topology.Network:
    if name == "mlp-100":
        return nets.mlp(100, activation=activation)
    return nets.resnet(101, version=2, shortcut_weight=SHORTCUT_WEIGHT, activation=activation)


@dataclass
class Row:
    net: str
    method: str
    activation: str
    ks_seconds: float | None = None
    compat_seconds: float | None = None
    dks_seconds: float | None = None
    ks_params: dict[str, float] | None = None
    dks_params: dict[str, float] | None = None
    ks_error: str | None = None
    dks_error: str | None = None
    ks_residual: float | None = None
    dks_residual: float | None = None
    notes: list[str] = field(default_factory=list)


def timed(fn: Callable[[], Any], repeats: int, before: Callable[[], None]) -> tuple[Any, float]:
    before()
    result = fn()  # warm: compiled functions, no answers (caches cleared before each run)
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def run_kernelshape(rows: list[Row], repeats: int) -> None:
    for row in rows:
        method = row.method.lower()

        def request(row: Row = row, method: str = method) -> ks.solve.Solution:
            return ks.shape(build(row.net, row.activation), method)

        def via_compat(row: Row = row) -> dict:
            return compat.get_activations_params((row.activation,), row.method,
                                                 subnet_max_func=official_subnet_max(row.net))

        try:
            sol, row.ks_seconds = timed(request, repeats, maps.clear_caches)
            _, row.compat_seconds = timed(via_compat, repeats, maps.clear_caches)
            row.ks_params = sol.params[row.activation]
            row.notes.extend(w.split(";")[0][:60] for w in sol.warnings
                             if "better choice" not in w)
        except ValueError as exc:
            row.ks_error = f"{type(exc).__name__}: {str(exc)[:100]}"


def run_official(rows: list[Row], python: str, repeats: int, timeout: int) -> str | None:
    """Fill the dks columns; returns a message when the side environment is unusable."""
    if not os.path.exists(python):
        return (f"official dks package not found ({python} does not exist): create it with "
                "python3.11 -m venv /tmp/dksenv && /tmp/dksenv/bin/pip install dks autograd "
                "absl-py, or pass --dks-python / set KERNELSHAPE_DKS_PYTHON")
    check = subprocess.run([python, "-c", "import dks.base.activation_transform"],
                           capture_output=True, text=True)
    if check.returncode:
        return f"{python} cannot import dks: {check.stderr.strip().splitlines()[-1:]}"
    config = {"repeats": repeats, "timeout": timeout,
              "requests": [{"net": r.net, "method": r.method, "activation": r.activation}
                           for r in rows]}
    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    proc = subprocess.Popen([python, "-c", WORKER % {"w": SHORTCUT_WEIGHT}],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(config))
    proc.stdin.close()
    index = {(r.net, r.method, r.activation): r for r in rows}
    for line in proc.stdout:
        out = json.loads(line)
        row = index[(out["net"], out["method"], out["activation"])]
        if "error" in out:
            row.dks_error = out["error"]
        else:
            row.dks_params, row.dks_seconds = out["params"], out["seconds"]
        print(".", end="", file=sys.stderr, flush=True)
    proc.wait()
    print(file=sys.stderr)
    return None


def conditions(row: Row, net: ks.topology.Network) -> dict[str, float]:
    """The exact local targets of the request (the official package drops Q'(1) for relu)."""
    if row.method == "DKS":
        xi = dks_local_slope(net, 1.5)
        if row.activation == "relu":
            return {"q_value": 1.0, "c_value_0": 0.0, "c_slope_1": xi}
        return {"q_value": 1.0, "q_slope": 1.0, "c_value_0": 0.0, "c_slope_1": xi}
    if row.activation == "leaky_relu":
        return {"q_value": 1.0, "q_slope": 1.0, "c_slope_1": 1.0}
    return {"q_value": 1.0, "q_slope": 1.0, "c_slope_1": 1.0,
            "c_curv_1": tat_local_curvature(net, 0.3)}


def residual(row: Row, params: dict[str, float], dps: int) -> float:
    from kernelshape.engine.precise import local_summary

    net = build(row.net, row.activation)
    act = ks.activation(row.activation)
    transform = ks.Transform(**{k: params.get(k, d) for k, d in (
        ("input_scale", 1.0), ("input_shift", 0.0), ("output_shift", 0.0),
        ("output_scale", 1.0))}, negative_slope=params.get("negative_slope"))
    values = local_summary(act.transformed(transform), dps=dps)
    worst = max(abs(float(values[k]) - target) for k, target in conditions(row, net).items())
    if row.method == "TAT" and row.activation == "leaky_relu":
        slope = params["negative_slope"]
        worst = max(worst, abs(float(net.subnet_max(0.0, lambda c: leaky_relu_cmap(c, slope)))
                               - 0.9))
    return worst


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.1f}"


def fmt_res(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.0e}"


def table(rows: list[Row]) -> str:
    header = ("net", "method", "activation", "ks ms", "compat ms", "dks ms", "dks/ks",
              "ks res", "dks res", "notes")
    lines = []
    for r in rows:
        ratio = "-"
        if r.ks_seconds and r.dks_seconds:
            ratio = f"{r.dks_seconds / r.ks_seconds:.1f}x"
        notes = list(r.notes)
        if r.ks_error:
            notes.append("ks: " + r.ks_error.split(":")[0] + ":" + r.ks_error.split(":", 1)[1][:50])
        if r.dks_error:
            notes.append("dks: " + r.dks_error[:60])
        lines.append((r.net, r.method, r.activation, fmt_ms(r.ks_seconds),
                      fmt_ms(r.compat_seconds), fmt_ms(r.dks_seconds), ratio,
                      fmt_res(r.ks_residual), fmt_res(r.dks_residual), "; ".join(notes)))
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header) - 1)]
    out = []
    for line in [header, *lines]:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line[:-1], widths, strict=True))
                   + "  " + line[-1])
    return "\n".join(out)


def summary(rows: list[Row]) -> str:
    lines = []
    for method in METHODS:
        for net in NETWORKS:
            both = [r for r in rows if r.method == method and r.net == net
                    and r.ks_seconds and r.dks_seconds]
            if not both:
                continue
            ratios = [r.dks_seconds / r.ks_seconds for r in both]  # type: ignore[operator]
            ks_total = sum(r.ks_seconds for r in both)  # type: ignore[misc]
            dks_total = sum(r.dks_seconds for r in both)  # type: ignore[misc]
            lines.append(f"{method} {net}: {len(both)} requests solved by both; speedup median "
                         f"{statistics.median(ratios):.1f}x (min {min(ratios):.1f}x, max "
                         f"{max(ratios):.1f}x), total {1e3 * ks_total:.0f} ms vs "
                         f"{1e3 * dks_total:.0f} ms")
    ks_fail = [r for r in rows if r.ks_error]
    dks_fail = [r for r in rows if r.dks_error]
    only_dks = [f"{r.net}/{r.method}/{r.activation}" for r in ks_fail if not r.dks_error]
    lines.append(f"failures: kernelshape {len(ks_fail)}, dks {len(dks_fail)}; solved by dks but "
                 f"not by kernelshape: {', '.join(only_dks) or 'none'}")
    ks_res = [r.ks_residual for r in rows if r.ks_residual is not None]
    dks_res = [r.dks_residual for r in rows if r.dks_residual is not None
               and math.isfinite(r.dks_residual)]
    if ks_res:
        lines.append(f"max residual: kernelshape {max(ks_res):.1e}"
                     + (f", dks {max(dks_res):.1e} (finite ones; median "
                        f"{statistics.median(dks_res):.1e})" if dks_res else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dks-python", default=os.environ.get("KERNELSHAPE_DKS_PYTHON",
                                                               DEFAULT_DKS_PYTHON),
                        help="python of the side environment with the official dks package")
    parser.add_argument("--no-official", action="store_true", help="skip the dks columns")
    parser.add_argument("--activations", default=",".join(ACTIVATIONS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--nets", default=",".join(NETWORKS))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per request")
    parser.add_argument("--official-repeats", type=int, default=1)
    parser.add_argument("--official-timeout", type=int, default=120, help="seconds per request")
    parser.add_argument("--dps", type=int, default=30, help="digits of the residual check")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    logging.getLogger("kernelshape.compat.dks").setLevel(logging.ERROR)
    rows = [Row(net, method, act) for net in args.nets.split(",")
            for method in args.methods.split(",") for act in args.activations.split(",")]
    ks.shape(nets.mlp(3), "dks")  # import-time and first-call costs
    run_kernelshape(rows, args.repeats)
    message = None
    if args.no_official:
        message = "official columns skipped (--no-official)"
    else:
        message = run_official(rows, args.dks_python, args.official_repeats,
                               args.official_timeout)
    for row in rows:
        if row.ks_params:
            row.ks_residual = residual(row, row.ks_params, args.dps)
        if row.dks_params:
            try:
                row.dks_residual = residual(row, row.dks_params, args.dps)
            except ValueError as exc:  # e.g. constants that make the activation zero
                row.notes.append(f"dks constants not evaluable: {exc}")
    print(table(rows))
    print()
    if message:
        print(message)
    print(summary(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([row.__dict__ for row in rows], fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
