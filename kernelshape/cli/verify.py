"""``kernelshape verify theorem13|theorem27|approximation``: the theory checks as tables.

Output: a markdown table (paste-able) or one JSON object with ``--json``. Exit codes: 0 every
inequality holds, 1 one is violated, 2 bad input (message on stderr).
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Sequence
from typing import Any

from kernelshape.cli.arguments import (
    Parser,
    UsageError,
    choices,
    command,
    integer,
    json_flag,
    listing,
    real,
)
from kernelshape.solve.options import METHODS, TARGETS

EPILOG = """\
Numerical checks of the DKS theorems (seed talk): Theorem 13 (C-map approximation bounds
for every subnetwork), Theorem 27 (per-layer NTK bound 11 (zeta - 1)) and 'approximation'
(finite-width kernels against the infinite-width maps, error against width).

examples:
  kernelshape verify theorem13 --net mlp:depth=100,activation=tanh
  kernelshape verify theorem13 --net mlp:depth=20,activation=tanh --method dks --summary
  kernelshape verify theorem27 --net mlp:depth=20,activation=softplus --json
  kernelshape verify approximation --net mlp:depth=10,activation=tanh --widths 64,1024"""
CHECKS = {
    "theorem13": "Theorem 13: C-map deviation bounds on every subnetwork",
    "theorem27": "Theorem 27: the per-layer NTK of a DKS-shaped chain stays near x'x/d0",
    "approximation": "finite-width q and c against the maps, error against width",
}


def register(sub: Any) -> None:
    """``verify`` with one subcommand per check, each listing all of its options."""
    p = command(sub, "verify", "check Theorem 13 / Theorem 27 / kernel approximation", EPILOG)
    checks = p.add_subparsers(dest="theorem", metavar="CHECK", parser_class=Parser)
    checks.required = True
    for name, text in CHECKS.items():
        q = command(checks, name, text, EPILOG)
        q.add_argument("--net", required=True, metavar="SPEC", help="network SPEC or JSON path")
        default = "none" if name == "theorem13" else "dks"
        q.add_argument("--method", type=choices(METHODS), default=[default],
                       help=f"comma-separated methods among {', '.join(METHODS)} "
                            f"(default {default})")
        for target in ("zeta", "tau", "eta"):
            t = TARGETS[target]
            q.add_argument(f"--{target}", type=listing(real, "numbers"),
                           help=f"{t.meaning}; comma-separated (default {t.default:g})")
        q.add_argument("--depths", type=listing(integer(1), "positive integers"),
                       help="rebuild the preset SPEC at these depths")
        q.add_argument("--grid", type=integer(2),
                       help="points of the grid the maxima over c start from")
        if name == "theorem13":
            q.add_argument("--prefixes", action="store_true",
                           help="also check input -> every nonlinear layer")
            q.add_argument("--summary", action="store_true",
                           help="one row per network: the subnetwork with the least slack")
        else:
            q.add_argument("--widths", type=listing(integer(1), "positive integers"),
                           help="finite widths (rebuilds the preset SPEC with width=...)")
            q.add_argument("--seeds", type=integer(1), help="random networks per width")
            q.add_argument("--cosines", type=listing(real, "numbers"),
                           help="input cosines of the finite-width networks")
        if name == "approximation":
            q.add_argument("--sampler", choices=("frame", "matrix"), default="frame",
                           help="frame: SUO weights drawn on the inputs' span (O(width)); "
                                "matrix: full SUO matrices")
        json_flag(q)
        q.set_defaults(handler=run)


# --------------------------------------------------------------------------- formatting

def _g(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**NO**"
    v = float(value)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def _e(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2e}"


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table (``|`` in cells escaped)."""
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- runs

def _targets(method: str, opts: argparse.Namespace, spec: str) -> list[dict[str, float]]:
    """One target dict per value of the option that applies to ``method`` on this network."""
    from kernelshape.solve.options import applicable_targets
    from kernelshape.topology import parse_spec

    names = [n for n in applicable_targets(method, parse_spec(spec).activations.values())
             if n in ("zeta", "tau", "eta")]
    return [{name: v} for name in names
            for v in getattr(opts, name) or [TARGETS[name].default]] or [{}]


def _check_targets_apply(opts: argparse.Namespace) -> None:
    """Refuse a target option that none of the chosen methods uses on this network."""
    from kernelshape.solve.options import applicable_targets
    from kernelshape.topology import parse_spec

    activations = parse_spec(opts.net).activations.values()
    for name in ("zeta", "tau", "eta"):
        if getattr(opts, name) is None:
            continue
        users = [m for m in opts.method if name in applicable_targets(m, activations)]
        if not users:
            takers = "/".join(TARGETS[name].methods)
            raise UsageError(f"--{name} does not apply to method {','.join(opts.method)} on "
                             f"this network ({TARGETS[name].meaning}; method {takers}"
                             + (", smooth activations" if name == "tau" else
                                ", Leaky-ReLU networks" if name == "eta" else "") + ")")


def _specs(spec: str, depths: list[int] | None) -> list[str]:
    from kernelshape.topology.spec import with_option

    return [with_option(spec, "depth", d) for d in depths] if depths else [spec]


def _theorem13(spec: str, opts: argparse.Namespace) -> tuple[dict[str, Any], str, bool]:
    from kernelshape.verify.theorem13 import BOUND_TEXT, BOUNDS, GRID, theorem13

    reports = []
    for s, method in itertools.product(_specs(spec, opts.depths), opts.method):
        for target in _targets(method, opts, s):
            reports.append(theorem13(s, method, prefixes=opts.prefixes, n=opts.grid or GRID,
                                     **target))
    headers = ["network", "method", "target", "subnetwork", "C_f(0)", "C'_f(0)", "C'_f(1)",
               "max|C_f-c| (at c)", "max|C'_f-1| (at c)", *BOUNDS, "min slack", "holds"]
    rows = []
    for r in reports:
        subs = r.subnets
        if opts.summary:  # the subnetwork with the smallest slack
            subs = [min(subs, key=lambda s: s.check.min_slack)]
        for s in subs:
            ch = s.check
            rows.append([r.spec, r.method, r.target, s.label, _g(ch.c_value_0), _g(ch.c_slope_0),
                         _g(ch.c_slope_1), f"{_g(ch.max_dev.value)} ({_g(ch.max_dev.at, 3)})",
                         f"{_g(ch.max_slope_dev.value)} ({_g(ch.max_slope_dev.at, 3)})",
                         *[(_g(ch.bound(b).ratio, 3) if ch.bound(b).applies else "-")
                           for b in BOUNDS], _e(ch.min_slack), _g(ch.holds)])
    holds = all(r.holds for r in reports)
    legend = "\n".join(f"- {b}: {BOUND_TEXT[b]}" for b in BOUNDS)
    text = (f"Theorem 13 (C-map deviation bounds), every subnetwork f; bound columns give the "
            f"tightness small/large (<= 1 holds, 1 = attained, '-' = C_f(0) != 0):\n{legend}\n\n"
            + markdown(headers, rows)
            + f"\n\nall inequalities hold: {'yes' if holds else 'NO'}"
            + f" ({sum(len(r.subnets) for r in reports)} subnetworks, "
            + f"{sum(r.seconds for r in reports):.1f} s)")
    payload = {"theorem": "theorem13", "holds": holds, "reports": [r.to_dict() for r in reports]}
    return payload, text, holds


def _theorem27(spec: str, opts: argparse.Namespace) -> tuple[dict[str, Any], str, bool]:
    from kernelshape.verify.theorem13 import GRID
    from kernelshape.verify.theorem27 import theorem27

    reports = []
    for method in opts.method:
        kw: dict[str, Any] = {}
        if opts.cosines:
            kw["cosines"] = opts.cosines
        if opts.widths is not None:
            kw["widths"] = opts.widths
        reports.append(theorem27(spec, method=method, zetas=opts.zeta, depths=opts.depths,
                                 seeds=range(opts.seeds or 1),
                                 tau=opts.tau[0] if opts.tau else None,
                                 eta=opts.eta[0] if opts.eta else None, n=opts.grid or GRID,
                                 **kw))
    headers = ["network", "method", "depth", "zeta", "width", "seed",
               "max_i max_c |Theta_i - x'x/d0|", "at (layer, c)", "11(zeta-1)", "ratio",
               "holds", "max|Theta_i - Theta_i^inf|"]
    rows = []
    for r in reports:
        for c in r.checks:
            rows.append([r.spec, r.method, str(c.depth), _g(c.zeta), "inf" if c.width is None
                         else str(c.width), "-" if c.seed is None else str(c.seed),
                         _g(c.max_dev), f"{c.at_layer}, {_g(c.at_c, 3)}", _g(c.bound),
                         _g(c.ratio, 3), _g(c.holds), _g(c.error_vs_infinite, 3)])
    holds = all(r.holds for r in reports)
    cos = ", ".join(_g(v, 3) for v in reports[0].cosines)
    text = ("Theorem 27 (per-layer NTK of DKS-shaped chains), Theta_i(x,x') = 1/(m n_{i-1}) "
            "sum_k <df_k(x)/dW_i, df_k(x')/dW_i>; infinite width: max over c in [-1,1]; "
            f"finite width: one random SUO network, c in {{{cos}}}:\n\n"
            + markdown(headers, rows)
            + f"\n\nbound holds everywhere: {'yes' if holds else 'NO'}"
            + "".join(f"\nnote: {n}" for r in reports for n in r.notes))
    payload = {"theorem": "theorem27", "holds": holds, "reports": [r.to_dict() for r in reports]}
    return payload, text, holds


def _approximation(spec: str, opts: argparse.Namespace) -> tuple[dict[str, Any], str, bool]:
    from kernelshape.verify.approximation import COSINES, WIDTHS, kernel_approximation

    reports = []
    for s, method in itertools.product(_specs(spec, opts.depths), opts.method):
        for target in _targets(method, opts, s):
            reports.append(kernel_approximation(
                s, method, widths=opts.widths or WIDTHS, cosines=opts.cosines or COSINES,
                seeds=opts.seeds or 32, sampler=opts.sampler, **target))
    blocks = []
    for r in reports:
        rows = [[str(p.width), _g(p.q_rmse), _g(p.c_rmse), _g(p.q_mean_error, 3),
                 _g(p.c_mean_error, 3), str(p.samples)] for p in r.points]
        blocks.append(
            f"{r.spec}, {r.method}: features at {r.node} (depth {r.depth}); predicted "
            f"q = {_g(r.q_pred, 6)}, c = {', '.join(_g(v, 4) for v in r.c_pred)} for input "
            f"cosines {', '.join(_g(v, 3) for v in r.cosines)}; sampler {r.sampler}\n\n"
            + markdown(["width", "q RMSE", "c RMSE", "q bias", "c bias", "seeds"], rows)
            + f"\n\nlog-log slope: q {r.q_slope:.3f}, c {r.c_slope:.3f} (1/sqrt(width): -0.5)")
    payload = {"study": "kernel-approximation", "reports": [r.to_dict() for r in reports]}
    return payload, "\n\n".join(blocks), True


def run(args: argparse.Namespace) -> int:
    """kernelshape verify CHECK: 0 every inequality holds, 1 one is violated."""
    check = {"theorem13": _theorem13, "theorem27": _theorem27,
             "approximation": _approximation}[args.theorem]
    _check_targets_apply(args)
    payload, text, holds = check(args.net, args)
    if args.json and args.emit_json is not None:
        args.emit_json(payload)
    else:
        print(text)
    return 0 if holds else 1
