"""Generate the table of constants in docs/solving.md.

    python docs/gen_solving_table.py          # print the markdown table
    python docs/gen_solving_table.py --write  # replace the table between the markers in
                                              # docs/solving.md

Every entry is ``ks.shape(net, method)`` at the default targets (zeta = 1.5, tau = 0.3,
eta = 0.9), certified by the default float certificate; the last column is its max |residual|.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

import kernelshape as ks
from kernelshape.topology import nets

START, END = "<!-- constants-table:start -->", "<!-- constants-table:end -->"
NETWORKS = [("mlp-10", lambda a: nets.mlp(10, activation=a)),
            ("mlp-50", lambda a: nets.mlp(50, activation=a)),
            ("mlp-100", lambda a: nets.mlp(100, activation=a)),
            ("resnet-50 (w=0.6)",
             lambda a: nets.resnet(50, version=2, shortcut_weight=0.6, activation=a)),
            ("resnet-101 (w=0.6)",
             lambda a: nets.resnet(101, version=2, shortcut_weight=0.6, activation=a))]
REQUESTS = [("dks", "tanh"), ("dks", "softplus"), ("dks", "gelu"), ("dks", "swish"),
            ("dks", "elu"), ("dks", "leaky_relu"), ("dks", "relu"),
            ("tat", "tanh"), ("tat", "softplus"), ("tat", "gelu"), ("tat", "swish"),
            ("tat", "leaky_relu")]


def rows() -> list[str]:
    out = ["| network | method | activation | input_scale | input_shift | output_shift "
           "| output_scale | negative_slope | max residual |",
           "|---|---|---|---|---|---|---|---|---|"]
    for label, build in NETWORKS:
        for method, activation in REQUESTS:
            try:
                sol = ks.shape(build(activation), method)
            except ValueError as exc:
                out.append(f"| {label} | {method} | {activation} | infeasible: "
                           f"{str(exc).split('. ')[0]} | | | | | |")
                continue
            p = sol.params[activation]
            slope = f"{p['negative_slope']:.10g}" if "negative_slope" in p else ""
            out.append(f"| {label} | {method} | {activation} | {p['input_scale']:.10g} | "
                       f"{p['input_shift']:.10g} | {p['output_shift']:.10g} | "
                       f"{p['output_scale']:.10g} | {slope} | {sol.max_residual:.0e} |")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="update docs/solving.md in place")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    table = "\n".join(rows())
    if not args.write:
        print(table)
        return 0
    path = Path(__file__).with_name("solving.md")
    text = path.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        print(f"markers {START} ... {END} not found in {path}", file=sys.stderr)
        return 1
    path.write_text(pattern.sub(lambda _: f"{START}\n{table}\n{END}", text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
