"""``kernelshape demo``: the README's main job on built-in defaults (what ``make demo`` runs).

Shapes a 100-layer tanh MLP and a ResNet-101 (softplus, version 2, shortcut weight 0.6: the
DKS paper's recommended setting for ResNets with shortcuts) with DKS (zeta = 1.5) and TAT
(tau = 0.3), prints the constants with their certificates, saves the constants documents,
exports the ResNet-101 DKS constants to PyTorch and draws the C-map degeneration plot when
``kernelshape.plots`` exists.
"""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Any

from kernelshape.cli.commands import (
    load_network,
    optional_function,
    solution_payload,
    solution_text,
    solver,
)
from kernelshape.cli.output import Progress, Unavailable, check_output_dir, fmt_short, table

NETWORKS = (
    ("mlp100-tanh", "mlp:depth=100,activation=tanh"),
    ("resnet101-softplus", "resnet:depth=101,shortcut_weight=0.6,version=2,activation=softplus"),
)
METHODS = (("dks", {"zeta": 1.5}), ("tat", {"tau": 0.3}))
MAIN_DOCUMENT = ("resnet101-softplus", "dks")
DEGENERATION_PLOT = "cmap-degeneration"


def _plot(out: str) -> str:
    """Draw the degeneration plot with kernelshape.plots, or say why not."""
    try:
        run_cli = optional_function("kernelshape.plots", "run_cli", "the C-map degeneration "
                                    "plot", "it lands with issue 6, theory checks and plots")
    except Unavailable as exc:
        return f"plot: skipped: {exc}"
    path = os.path.join(out, "cmap_degeneration.png")
    args = argparse.Namespace(command="plot", name=DEGENERATION_PLOT, output=path, extra=[],
                              json=False, emit_json=None)
    code = run_cli(args)
    if code:
        return f"plot: kernelshape.plots exited with code {code}"
    return f"plot: wrote {path}"


def run(args: argparse.Namespace) -> int:
    """Run the demo; every file goes under ``args.out``."""
    out = args.out
    check_output_dir(out, "demo output directory")
    shape = solver()
    os.makedirs(out, exist_ok=True)
    from kernelshape.export import export_to_file

    summary: list[list[str]] = []
    saved: dict[tuple[str, str], str] = {}
    step, total = 0, len(NETWORKS) * len(METHODS)
    for name, spec in NETWORKS:
        with Progress(f"building {name}"):
            net = load_network(spec)
        for method, targets in METHODS:
            step += 1
            print(f"== [{step}/{total}] {method.upper()} on {name} ==", flush=True)
            with Progress(f"shaping {name} with {method}") as bar:
                sol = shape(net, method=method, **targets)
            path = os.path.join(out, f"{name}-{method}.json")
            sol.save(path)
            saved[(name, method)] = path
            payload: dict[str, Any] = solution_payload(sol, net, spec, bar.elapsed, path)
            print(solution_text(payload), "\n", flush=True)
            for key, params in payload["activations"].items():
                summary.append([name, method, key,
                                ", ".join(f"{k}={float(v):.6g}" for k, v in params.items()),
                                fmt_short(payload["max_residual"])])
    main = os.path.join(out, "constants.json")
    shutil.copyfile(saved[MAIN_DOCUMENT], main)
    torch_file = os.path.join(out, "constants_pytorch.py")
    export_to_file(main, torch_file, to="pytorch")
    print("== summary ==")
    print(table(["network", "method", "activation", "constants (rounded; full precision in "
                 "the JSON)", "max residual"], summary))
    print()
    print(f"wrote {main} (= {os.path.basename(saved[MAIN_DOCUMENT])}) and "
          f"{', '.join(os.path.basename(p) for p in saved.values())} in {out}")
    print(f"wrote {torch_file} (PyTorch: get_activation, scaled_uniform_orthogonal_, "
          "per_location_normalization)")
    print(_plot(out))
    return 0
