"""``kernelshape verify theorem13|theorem27|approximation`` (also ``python -m kernelshape.verify``).

``run_cli(args)`` receives the CLI's Namespace (``theorem``, ``net``, ``json``, ``emit_json``,
``extra``) and parses its own options from ``extra``. Output: a markdown table (paste-able) or
one JSON object with ``--json``. Exit codes: 0 every inequality holds, 1 one is violated,
2 bad input (message on stderr).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

from kernelshape.verify.networks import METHODS, with_option

THEOREMS = ("theorem13", "theorem27", "approximation")


class _BadInput(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # noqa: D401 (argparse API)
        raise _BadInput(message)


def _list(kind: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, "
                                             f"got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one {what[:-1]}")
        return values
    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _methods(text: str) -> list[str]:
    values = [v.strip().lower() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in METHODS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"methods must be among {', '.join(METHODS)}; got "
                                         f"{text!r}")
    return values


def build_parser(theorem: str) -> argparse.ArgumentParser:
    """The options ``kernelshape verify THEOREM`` accepts after ``--net SPEC``."""
    p = _Parser(prog=f"kernelshape verify {theorem}", add_help=False)
    default_method = "none" if theorem == "theorem13" else "dks"
    p.add_argument("--method", type=_methods, default=[default_method],
                   help=f"comma-separated methods among {', '.join(METHODS)} "
                        f"(default {default_method})")
    p.add_argument("--zeta", type=_list(float, "numbers"), default=[1.5])
    p.add_argument("--tau", type=_list(float, "numbers"), default=[0.3])
    p.add_argument("--eta", type=_list(float, "numbers"), default=[0.9])
    p.add_argument("--depths", type=_list(_positive, "positive integers"), default=None)
    p.add_argument("--grid", type=_positive, default=None)
    if theorem == "theorem13":
        p.add_argument("--prefixes", action="store_true")
        p.add_argument("--summary", action="store_true")
    else:
        p.add_argument("--widths", type=_list(_positive, "positive integers"), default=None)
        p.add_argument("--seeds", type=_positive, default=None)
        p.add_argument("--cosines", type=_list(float, "numbers"), default=None)
    if theorem == "approximation":
        p.add_argument("--sampler", choices=("frame", "matrix"), default="frame")
    return p


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
    if method == "dks":
        return [{"zeta": z} for z in opts.zeta]
    if method == "tat":
        from kernelshape.verify.networks import load

        leaky = all(a.name == "leaky_relu" for a in load(spec)[0].activations.values())
        return [{"eta": e} for e in opts.eta] if leaky else [{"tau": t} for t in opts.tau]
    return [{}]


def _specs(spec: str, depths: list[int] | None) -> list[str]:
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
        reports.append(theorem27(spec, method=method, zetas=opts.zeta, depths=opts.depths,
                                 widths=opts.widths if opts.widths is not None else (512,),
                                 seeds=range(opts.seeds or 1), tau=opts.tau[0],
                                 eta=opts.eta[0], n=opts.grid or GRID, **kw))
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


def run_cli(args: argparse.Namespace) -> int:
    """Entry point of ``kernelshape verify``; returns the exit code."""
    theorem = getattr(args, "theorem", None)
    prog = f"kernelshape verify {theorem}"
    try:
        if theorem not in THEOREMS:
            raise _BadInput(f"unknown check {theorem!r}; choose from {', '.join(THEOREMS)}")
        extra = list(getattr(args, "extra", None) or [])
        if "-h" in extra or "--help" in extra:
            build_parser(theorem).print_help()
            return 0
        opts = build_parser(theorem).parse_args(extra)
        spec = getattr(args, "net", None)
        if not spec:
            raise _BadInput("--net SPEC is required")
        run = {"theorem13": _theorem13, "theorem27": _theorem27,
               "approximation": _approximation}[theorem]
        payload, text, holds = run(spec, opts)
    except _BadInput as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        emit = getattr(args, "emit_json", None)
        if emit is not None:
            emit(payload)
        else:
            from kernelshape.cli.output import jsonable

            sys.stdout.write(json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n")
    else:
        print(text)
    return 0 if holds else 1
