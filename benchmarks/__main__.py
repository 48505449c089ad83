"""Run every benchmark: ``python -m benchmarks [NAME ...]`` (NAME: e.g. ``maps``, ``topology``).

Each ``benchmarks/bench_*.py`` module's ``main()`` runs in turn with default arguments; a
failing benchmark is reported and the others still run (exit status 1 if any failed).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def modules() -> list[str]:
    """Names of the benchmark modules, sorted (``bench_maps``, ``bench_topology``, ...)."""
    here = str(Path(__file__).parent)
    return sorted(m.name for m in pkgutil.iter_modules([here]) if m.name.startswith("bench_"))


def run(selected: list[str]) -> int:
    names = modules()
    if selected:
        wanted = {s if s.startswith("bench_") else f"bench_{s}" for s in selected}
        unknown = wanted - set(names)
        if unknown:
            print(f"unknown benchmark(s) {', '.join(sorted(unknown))}; available: "
                  f"{', '.join(n.removeprefix('bench_') for n in names)}")
            return 2
        names = [n for n in names if n in wanted]
    failed = []
    for name in names:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        argv, sys.argv = sys.argv, [f"benchmarks.{name}"]  # each main() sees no arguments
        start = time.perf_counter()
        try:
            result = importlib.import_module(f"benchmarks.{name}").main()
            if isinstance(result, int) and result != 0:
                failed.append(name)
        except SystemExit as exc:
            if exc.code not in (0, None):
                failed.append(name)
        except Exception:  # noqa: BLE001 - report and go on with the next benchmark
            traceback.print_exc()
            failed.append(name)
        finally:
            sys.argv = argv
        print(f"--- {name}: {time.perf_counter() - start:.1f} s", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
