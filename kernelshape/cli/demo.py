"""``kernelshape demo``: the README's main job on built-in defaults (what ``make demo`` runs).

Shapes a 100-layer tanh MLP and a ResNet-101 (softplus, version 2, shortcut weight 0.6: the
DKS paper's recommended setting for ResNets with shortcuts) with DKS and TAT at their default
targets, prints the constants with their certificates, saves the constants documents,
exports the ResNet-101 DKS constants to PyTorch and draws the C-map degeneration plot.
"""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Any

from kernelshape.cli.arguments import command
from kernelshape.cli.commands import load_network, solution_payload, solution_text
from kernelshape.cli.output import Progress, check_output_dir, fmt_short, table

NETWORKS = (
    ("mlp100-tanh", "mlp:depth=100,activation=tanh"),
    ("resnet101-softplus", "resnet:depth=101,shortcut_weight=0.6,version=2,activation=softplus"),
)
METHODS = ("dks", "tat")  # at their default targets
MAIN_DOCUMENT = ("resnet101-softplus", "dks")
DEGENERATION_PLOT = "cmap-degeneration"


EPILOG = """\
Shapes a 100-layer tanh MLP and a ResNet-101 (softplus, version 2, shortcut weight 0.6)
with DKS and TAT at their default targets, prints the constants with their certificates, and
writes into --out (default demo-out): one constants document per network and method,
constants.json (the ResNet-101 DKS document), constants_pytorch.py exported from it, and
the C-map degeneration plot.

examples:
  kernelshape demo
  kernelshape demo --out /tmp/demo"""


def register(sub: Any) -> None:
    p = command(sub, "demo", "shape a deep MLP and a ResNet-101 and write their constants",
                EPILOG)
    p.add_argument("--out", default="demo-out", metavar="DIR",
                   help="output directory (default demo-out)")
    p.set_defaults(handler=run, json=False)


def run(args: argparse.Namespace) -> int:
    """Run the demo; every file goes under ``args.out``."""
    out = args.out
    check_output_dir(out, "demo output directory")
    os.makedirs(out, exist_ok=True)
    from kernelshape.export import export_to_file
    from kernelshape.plots import draw
    from kernelshape.solve import shape

    summary: list[list[str]] = []
    saved: dict[tuple[str, str], str] = {}
    step, total = 0, len(NETWORKS) * len(METHODS)
    for name, spec in NETWORKS:
        with Progress(f"building {name}"):
            net = load_network(spec)
        for method in METHODS:
            step += 1
            print(f"== [{step}/{total}] {method.upper()} on {name} ==", flush=True)
            with Progress(f"shaping {name} with {method}") as bar:
                sol = shape(net, method=method)
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
    path = os.path.join(out, "cmap_degeneration.png")
    draw(DEGENERATION_PLOT, path)
    print(f"plot: wrote {path}")
    return 0

