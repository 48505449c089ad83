"""Map-engine benchmark (issue 2): ``python -m benchmarks.bench_maps [--quick] [--no-dks]``.

Per built-in activation (q = 1, untransformed):

* ``summary cold``: first ``local_summary`` call in this process (includes compiling the
  activation's sympy pieces); ``summary warm``: recomputed from scratch with the compiled
  pieces (result caches cleared), median of 5;
* ``C 1e5 build`` / ``warm``: ``cmap`` at 10^5 points in [-1, 1] with every cache cleared
  (builds the Hermite expansion or the quadrature interpolant) and then repeated (median of 5);
* ``dps=30``: ``local_summary(dps=30)`` and one interior C value at dps=30 (a 10^5-point C map
  at 30 digits would cost 10^5 times that; the column says so);
* ``dks``: the official ``dks`` package's quadrature (``dks.base.activation_transform``: the
  100000-node Gauss-Legendre rule on [-10, 10] for 1-D means, ``scipy.integrate.dblquad`` for
  C at interior c), run in a subprocess of a side environment (``$KERNELSHAPE_DKS_PYTHON``, else
  ``/tmp/dksenv/bin/python``, created with ``python3.11 -m venv`` + ``pip install dks autograd
  absl-py`` if missing); ratio = kernelshape time / dks time in the same run, and the largest
  error of dks' local-summary values against ours (ours agree with dps=40 to 1e-12).

Goal: ``summary warm`` under 5 ms per activation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from kernelshape.engine import maps  # noqa: E402
from kernelshape.engine.activations import activation, list_activations  # noqa: E402
from kernelshape.engine.quadrature import Scaled, expect_1d  # noqa: E402

GOAL_MS = 5.0
POINTS = 100_000
DPS = 30
C_POINT = 0.5
DKS_PYTHON = os.environ.get("KERNELSHAPE_DKS_PYTHON", "/tmp/dksenv/bin/python")

DKS_SCRIPT = r'''
import json, sys, time
import autograd.numpy as np
from dks.base import activation_getter as ag, activation_transform as at

extra = {
    "identity": lambda x: x, "abs": np.abs, "sign": np.sign, "step": lambda x: 1.0 * (x >= 0),
    "mish": lambda x: x * np.tanh(np.log(1 + np.exp(-np.abs(x))) + np.maximum(x, 0)),
    "sin": np.sin, "cos": np.cos, "gaussian": lambda x: np.exp(-x**2 / 2), "exp": np.exp,
}
names, with_cmap, c_point = json.loads(sys.argv[1]), sys.argv[2] == "1", float(sys.argv[3])
at._precompute_or_load_roots(at._QUADRATURE_ORDER)
print(json.dumps({"one": at._estimate_gaussian_mean(lambda x: np.ones_like(x))}), flush=True)

def summary(f):
    q = at._estimate_gaussian_mean(lambda x: f(x) ** 2)
    return {"q_value": q, "q_slope": at._calc_q_slope_1(f),
            "c_value_0": at._calc_c_map(f, 0, 0.0, q), "c_slope_0": at._calc_c_map(f, 1, 0.0, q),
            "c_slope_1": at._calc_c_slope(f, 1.0, q), "c_curv_1": at._calc_c_curv(f, 1.0, q)}

for name in names:
    try:
        f = extra[name] if name in extra else ag.get_activation_function(name)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            values = summary(f)
            times.append(time.perf_counter() - start)
        out = {"name": name, "summary_s": sorted(times)[1], "values": values}
        if with_cmap:
            start = time.perf_counter()
            out["c"] = at._calc_c_map(f, 0, c_point)
            out["c_point_s"] = time.perf_counter() - start
    except Exception as exc:
        out = {"name": name, "error": repr(exc)}
    print(json.dumps(out), flush=True)
'''


def _median_s(fn: Callable[[], object], repeats: int = 5, setup: Callable[[], object] = None
              ) -> float:
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _once_s(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def kernelshape_row(name: str, with_dps_cmap: bool) -> dict:
    act = activation(name)
    c = np.linspace(-1.0, 1.0, POINTS)
    row = {"name": name, "route": maps.route(act)}
    row["summary_cold"] = _once_s(lambda: maps.local_summary(act))
    row["summary_warm"] = _median_s(lambda: maps.local_summary(act), setup=maps.clear_caches)
    maps.clear_caches()
    row["cmap_build"] = _once_s(lambda: maps.cmap(act, c))
    row["cmap_warm"] = _median_s(lambda: maps.cmap(act, c))
    row["summary_dps"] = _once_s(lambda: maps.local_summary(act, dps=DPS))
    if with_dps_cmap:
        row["c_point_dps"] = _once_s(lambda: maps.cmap(act, C_POINT, dps=DPS))
    row["values"] = maps.local_summary(act)
    row["c"] = maps.cmap(act, C_POINT)
    return row


def _ensure_dks_python() -> str | None:
    """Path of a Python with dks installed, creating the side environment if needed."""
    if Path(DKS_PYTHON).exists():
        return DKS_PYTHON
    env = Path(DKS_PYTHON).parent.parent
    try:
        subprocess.run(["python3.11", "-m", "venv", str(env)], check=True, timeout=300,
                       capture_output=True)
        subprocess.run([str(env / "bin" / "pip"), "install", "-q", "dks", "autograd",
                        "absl-py"], check=True, timeout=600, capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"dks side environment could not be created ({exc}); dks columns skipped")
        return None
    return DKS_PYTHON if Path(DKS_PYTHON).exists() else None


def dks_rows(names: list[str], with_cmap: bool) -> tuple[dict, float | None]:
    python = _ensure_dks_python()
    if python is None:
        return {}, None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(DKS_SCRIPT)
    try:
        proc = subprocess.run([python, fh.name, json.dumps(names), "1" if with_cmap else "0",
                               str(C_POINT)], capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"dks run failed ({exc}); dks columns skipped")
        return {}, None
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        print(f"dks run failed ({tail[0]}); dks columns skipped")
        return {}, None
    rows, one = {}, None
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if "one" in record:
            one = record["one"]
        else:
            rows[record["name"]] = record
    return rows, one


def _fmt(value: float | None, scale: float = 1e3, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value * scale:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="skip the dps=30 C point and dks' dblquad C point (slow)")
    parser.add_argument("--no-dks", action="store_true", help="skip the dks comparison")
    args = parser.parse_args(argv)
    names = list_activations()
    print(f"kernelshape map benchmark: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    one = Scaled(activation("identity"), 0.0, 1.0, 1.0, 0.0)  # g = 1
    ours_one = expect_1d([(one, 0)])
    rows = [kernelshape_row(name, not args.quick) for name in names]
    dks, dks_one = ({}, None) if args.no_dks else dks_rows(names, not args.quick)
    print(f"E[1] - 1: kernelshape {ours_one - 1:.2e}"
          + (f", dks {dks_one - 1:.2e}" if dks_one is not None else ""))
    head = (f"{'activation':11s} {'route':10s} {'sum cold':>8s} {'sum warm':>8s} "
            f"{'C1e5 bld':>8s} {'C1e5 wrm':>8s} {'sum dps':>8s} {'Cpt dps':>8s}")
    if dks:
        head += f" | {'dks sum':>8s} {'ratio':>6s} {'dks Cpt':>8s} {'ratio*':>8s} {'dks err':>8s}"
    print(head)
    print(f"{'':11s} {'':10s} {'ms':>8s} {'ms':>8s} {'ms':>8s} {'ms':>8s} {'s':>8s} {'s':>8s}"
          + (f" | {'ms':>8s} {'':>6s} {'s':>8s} {'':>8s} {'':>8s}" if dks else ""))
    for row in rows:
        line = (f"{row['name']:11s} {row['route']:10s} {_fmt(row['summary_cold']):>8s} "
                f"{_fmt(row['summary_warm']):>8s} {_fmt(row['cmap_build']):>8s} "
                f"{_fmt(row['cmap_warm']):>8s} {_fmt(row['summary_dps'], 1, 2):>8s} "
                f"{_fmt(row.get('c_point_dps'), 1, 2):>8s}")
        d = dks.get(row["name"])
        if d and "error" not in d:
            ratio = row["summary_warm"] / d["summary_s"]
            err = max(abs(row["values"][k] - d["values"][k]) for k in row["values"]
                      if math.isfinite(row["values"][k]) and math.isfinite(d["values"][k]))
            if "c" in d:
                err = max(err, abs(row["c"] - d["c"]))
            cratio = (row["cmap_build"] / (POINTS * d["c_point_s"]) if "c_point_s" in d
                      else None)
            line += (f" | {_fmt(d['summary_s']):>8s} {ratio:6.3f} "
                     f"{_fmt(d.get('c_point_s'), 1, 2):>8s} "
                     f"{(f'{cratio:.1e}' if cratio else '-'):>8s} {err:8.1e}")
        elif dks:
            line += f" | {'n/a':>8s}"
        print(line)
    worst = max(r["summary_warm"] for r in rows) * 1e3
    print(f"goal: local summary (warm) under {GOAL_MS} ms per activation: "
          f"{'met' if worst < GOAL_MS else 'MISSED'} (slowest {worst:.2f} ms)")
    print("sum = local_summary, C1e5 = 10^5-point cmap (bld: caches cleared, wrm: cached), "
          f"dps = {DPS} digits (Cpt: one interior C value; a 10^5-point C map at dps={DPS} "
          "costs 10^5 x Cpt)")
    if dks:
        print("dks: its 100000-node rule (summary) and dblquad (C point at c = 0.5); ratio = "
              "kernelshape warm / dks; ratio* = kernelshape 10^5-point map (built from "
              "scratch) / (10^5 x dks C point); dks err = max |dks - kernelshape| over the "
              "summary keys and C(0.5) (sign/step: dks differentiates a.e., so its "
              "c_slope_0 misses the Dirac mass: 0 instead of 2/pi, 1/pi)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
