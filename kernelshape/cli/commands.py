"""Subcommand handlers: activations, maps, shape, export, verify, plot, train.

Each handler takes the parsed ``argparse.Namespace`` and returns an exit code; with ``--json``
it hands one payload to ``args.emit_json`` (see :func:`kernelshape.cli.app.main`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from kernelshape.cli.arguments import (
    command,
    integer,
    json_flag,
    json_object,
    key_values,
    listing,
    real,
)
from kernelshape.cli.output import (
    Progress,
    UsageError,
    check_output_path,
    fmt,
    fmt_short,
    table,
)
from kernelshape.engine import DPS_RANGE as MAPS_DPS_RANGE
from kernelshape.engine.transform import TRANSFORM_KEYS
from kernelshape.solve.options import DPS_RANGE, METHODS, TARGETS

SUMMARY_MEANING = {
    "q_value": "Q(1) = E[phi(z)^2], output second moment for unit inputs",
    "q_slope": "Q'(1), slope of the Q map at q = 1",
    "c_value_0": "C(0) = E[phi(z)]^2 / Q(1)",
    "c_slope_0": "C'(0) = E[phi'(z)]^2 / Q(1)",
    "c_slope_1": "C'(1) = E[phi'(z)^2] / Q(1)",
    "c_curv_1": "C''(1) = E[phi''(z)^2] / Q(1)",
}
ROUTES = {"closed": "closed-form dual kernel (float64)",
          "hermite": "certified Hermite series from 1-D quadratures (float64)",
          "quadrature": "Gaussian quadrature, split at any kinks (float64)"}

EPILOGS = {
    "activations": """\
examples:
  kernelshape activations
  kernelshape activations --json""",
    "maps": """\
ACT is a built-in name (see 'kernelshape activations') or an expression in x built from
numbers, + - * / **, and functions such as exp, log, tanh, erf, sigmoid, softplus, max.

The local quantities are at q = 1 (inputs with unit second moment):
  q_value = Q(1) = E[phi(z)^2]       q_slope = Q'(1)
  c_value_0 = C(0)   c_slope_0 = C'(0)   c_slope_1 = C'(1)   c_curv_1 = C''(1)
Infinite values (e.g. C''(1) of ReLU) are printed as inf ("inf" strings in JSON).
With --dps N the values are computed with mpmath and printed with N significant digits;
in --json output they are then strings (JSON numbers are only float64).

examples:
  kernelshape maps tanh
  kernelshape maps relu --c=-1,0,0.5,1 --json
  kernelshape maps "x*tanh(log(1+exp(x)))" --q 0.5,1,2
  kernelshape maps softplus --transform '{"input_scale": 1.2, "output_scale": 1.5}'
  kernelshape maps leaky_relu --param negative_slope=0.2
  kernelshape maps tanh --dps 30
  kernelshape maps relu --formula          (closed-form K, Q and C maps; --latex for LaTeX)
  kernelshape maps tanh --series 12        (certified power series of C with its tail bound)""",
    "shape": """\
SPEC is a preset with options or the path of a saved network JSON, e.g.
  mlp:depth=100,activation=tanh
  convnet:depth=20,activation=softplus
  resnet:depth=101,shortcut_weight=0.6,version=2,activation=softplus
Methods: dks (network slope target --zeta), tat (curvature target --tau; Leaky ReLU: C(0)
target --eta), eoc (edge of chaos, bias variance --bias-variance), none.
The constants are gamma * (phi(alpha*x + beta) + delta) with alpha = input_scale,
beta = input_shift, delta = output_shift, gamma = output_scale; residuals are the
certificate: |condition - target| re-evaluated independently.
With --dps N mpmath values are printed with N digits (strings in --json output).

examples:
  kernelshape shape --net mlp:depth=100,activation=tanh --method dks
  kernelshape shape --net mlp:depth=100,activation=tanh --method dks --zeta 1.2 --json
  kernelshape shape --net resnet:depth=101,shortcut_weight=0.6,activation=softplus \\
                    --method tat --tau 0.3 -o constants.json
  kernelshape shape --net mlp:depth=50,activation=leaky_relu --method tat --eta 0.9
  kernelshape shape --net mlp:depth=20 --activation "x*tanh(softplus(x))" --method dks
  kernelshape shape --torch model.py:Net --input-shape 3x32x32 --method dks -o constants.json""",
    "export": """\
Writes one dependency-free source file (no kernelshape import) defining CONSTANTS,
get_activation(name), the framework's scaled-uniform-orthogonal initializer and
per_location_normalization(x). Without -o the source is printed on stdout.
The constants are re-checked against their recorded residuals before export.

examples:
  kernelshape export constants.json --to pytorch -o dks_constants.py
  kernelshape export constants.json --to jax > dks_jax.py
  kernelshape export constants.json --to numpy --json -o act.py""",
}


def register(sub: Any) -> None:
    """The activations, maps, shape and export subcommands."""
    from kernelshape.export.generate import FRAMEWORKS

    p = command(sub, "activations", "list the built-in activations", EPILOGS["activations"])
    json_flag(p)
    p.set_defaults(handler=activations)

    p = command(sub, "maps", "Q and C maps of an activation (optionally transformed)",
                EPILOGS["maps"])
    p.add_argument("act", metavar="ACT", help="built-in name or expression in x")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="parameter of a built-in, e.g. negative_slope=0.2 (repeatable)")
    p.add_argument("--transform", metavar="JSON",
                   type=json_object("--transform", TRANSFORM_KEYS, numbers=True),
                   help="transform constants as JSON, keys " + ", ".join(TRANSFORM_KEYS))
    p.add_argument("--c", metavar="LIST", type=listing(real, "correlations c in [-1, 1]"),
                   default=[], help="comma-separated c values in [-1, 1] for C(c)")
    p.add_argument("--q", metavar="LIST", type=listing(real, "second moments q > 0"),
                   default=[], help="comma-separated q values > 0 for Q(q)")
    low, high = MAPS_DPS_RANGE
    p.add_argument("--dps", type=integer(1), metavar="N",
                   help=f"compute with mpmath at N significant digits ({low}..{high})")
    p.add_argument("--formula", action="store_true",
                   help="print the closed-form K(q1, q2, c), Q(q) and C(c) (where one exists) "
                        "and the local conditions as formulas of alpha, beta, delta, gamma")
    p.add_argument("--latex", action="store_true", help="like --formula, in LaTeX")
    p.add_argument("--series", type=integer(0), metavar="N",
                   help="the C map at q = 1 as a power series up to c^N with a certified "
                        "bound on the rest (coefficients by mpmath)")
    json_flag(p)
    p.set_defaults(handler=maps)

    p = command(sub, "shape", "solve the DKS / TAT / EOC constants of a network",
                EPILOGS["shape"])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--net", metavar="SPEC", help="network SPEC or JSON path")
    source.add_argument("--torch", metavar="FILE.py:CLASS",
                        help="trace a PyTorch model: CLASS() from FILE.py (this imports and runs "
                             "that file; extra [torch]); needs --input-shape")
    p.add_argument("--input-shape", metavar="DIMS",
                   help="with --torch: one example's shape, e.g. 3x32x32 or 784")
    p.add_argument("--shortcut-weight", type=real, metavar="W",
                   help="with --torch: rewrite residuals x + f(x) as w*x + sqrt(1-w^2)*f(x)")
    p.add_argument("--torch-activation", action="append", default=[], metavar="NAME=EXPR",
                   help="with --torch: an elementwise module class or function NAME the model "
                        "uses, and the expression in x it computes (repeatable)")
    p.add_argument("--method", required=True, choices=METHODS)
    for name, target in TARGETS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=real,
                       metavar=name.upper()[0],
                       help=f"{target.meaning} (method {'/'.join(target.methods)}; "
                            f"{target.range_text(name)}; default {target.default:g})")
    p.add_argument("--activation", action="append", metavar="ACT",
                   help="set the activation option of a preset SPEC (built-in name or "
                        "expression in x)")
    low, high = DPS_RANGE
    p.add_argument("--dps", type=integer(1), metavar="N",
                   help=f"solve and certify with mpmath at N digits ({low}..{high})")
    p.add_argument("--certify", choices=("float", "mp"),
                   help="certificate route (default: the solver's)")
    p.add_argument("--all-solutions", action="store_true",
                   help="also list the other solutions (e.g. mirrored ones of odd activations)")
    p.add_argument("-o", "--output", metavar="FILE", help="save the constants document here")
    p.add_argument("--formula", action="store_true",
                   help="print the local conditions that were solved as formulas of alpha, "
                        "beta, delta, gamma (where exact ones exist) with the solution "
                        "substituted at 30 digits")
    json_flag(p)
    p.set_defaults(handler=shape)

    p = command(sub, "export", "generate framework code from a constants document",
                EPILOGS["export"])
    p.add_argument("constants", metavar="CONSTANTS_JSON", help="a saved constants document")
    p.add_argument("--to", required=True, metavar="FRAMEWORK",
                   help=f"one of {', '.join(FRAMEWORKS)} (aliases np, torch, tf, keras)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the source here (default stdout)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip re-evaluating the constants' local conditions")
    json_flag(p)
    p.set_defaults(handler=export)


def emit(args: argparse.Namespace, payload: Mapping[str, Any], text: str,
         dps: int | None = None) -> None:
    """Print ``payload`` as JSON (with --json) or ``text`` for people."""
    if getattr(args, "json", False) and args.emit_json is not None:
        args.emit_json(payload, dps)
    else:
        print(text)


def load_network(spec: str) -> Any:
    """The network a SPEC string or network JSON path describes."""
    from kernelshape.topology import parse_spec

    return parse_spec(spec)


def with_activation(spec: str, act: str) -> str:
    """A preset SPEC with its activation option set to ``act`` (replacing any given)."""
    if spec.strip().endswith(".json") or os.path.isfile(spec) or ":" not in spec and \
            "=" in spec:
        raise UsageError("--activation sets the activation option of a preset SPEC such as "
                         "mlp:depth=100; for a saved network JSON, edit its activation instead")
    from kernelshape.topology.spec import with_option

    return with_option(spec, "activation", act)


# --------------------------------------------------------------------------- activations


def activations(args: argparse.Namespace) -> int:
    """kernelshape activations."""
    from kernelshape.engine.activations import activation, builtin_formula, list_activations
    from kernelshape.engine.maps import route

    rows = []
    for name in list_activations():
        act = activation(name)
        rows.append({"name": name, "formula": builtin_formula(name), "params": dict(act.params),
                     "kinks": list(act.kinks), "route": route(act)})
    lines = [table(["name", "formula", "parameters", "kinks", "route"],
                   [[r["name"], r["formula"],
                     ", ".join(f"{k}={fmt(v)}" for k, v in r["params"].items()) or "-",
                     ", ".join(fmt(k) for k in r["kinks"]) or "-", r["route"]] for r in rows]),
             "",
             f"{len(rows)} built-ins. Any expression in x also works, e.g. "
             "'x*tanh(softplus(x))'.",
             "route (float64 C map): " + "; ".join(f"{k} = {v.removesuffix(' (float64)')}"
                                                   for k, v in ROUTES.items()) + "."]
    emit(args, {"activations": rows}, "\n".join(lines))
    return 0


# --------------------------------------------------------------------------- maps


def maps(args: argparse.Namespace) -> int:
    """kernelshape maps ACT."""
    from kernelshape.engine.activations import Transform, activation
    from kernelshape.engine.maps import cmap, local_summary, qmap, route

    cs, qs = args.c, args.q
    bad = [c for c in cs if abs(c) > 1.0]
    if bad:
        raise UsageError(f"--c: correlations must lie in [-1, 1], got {fmt(bad[0])}")
    bad = [q for q in qs if q <= 0.0]
    if bad:
        raise UsageError(f"--q: second moments must be > 0, got {fmt(bad[0])}")
    act = activation(args.act, **key_values(args.param, "--param"))
    if args.transform is not None:
        act = act.transformed(Transform(**args.transform))
    dps = args.dps
    points = len(cs) + len(qs) + 1
    with Progress(f"local maps of {act.name}") as bar:
        summary = local_summary(act, dps=dps)
        cvals: list[Any] = []
        if cs and dps is None:
            cvals = [float(v) for v in cmap(act, cs)]
        for n, c in enumerate(cs if dps is not None else []):
            bar.update(f"C({fmt(c)}) at {dps} digits ({n + 2}/{points})")
            cvals.append(cmap(act, c, dps=dps))
        qvals: list[Any] = []
        for n, q in enumerate(qs):
            bar.update(f"Q({fmt(q)}) ({len(cs) + n + 2}/{points})")
            qvals.append(qmap(act, q, dps=dps))
    used = route(act)
    how = f"mpmath, {dps} significant digits" if dps is not None else ROUTES.get(used, used)
    payload: dict[str, Any] = {
        "activation": act.name, "params": dict(act.params), "transform": act.transform.as_dict(),
        "formula": act.formula, "route": "mp" if dps is not None else used, "dps": dps,
        **summary,
    }
    if cs:
        payload["cmap"] = [[c, v] for c, v in zip(cs, cvals, strict=True)]
    if qs:
        payload["qmap"] = [[q, v] for q, v in zip(qs, qvals, strict=True)]
    lines = [f"activation  {act.name}", f"formula     {act.formula}", f"route       {how}", "",
             "local maps at q = 1 (inputs with unit second moment):",
             table(["quantity", "value", "meaning"],
                   [[k, fmt(v, dps), SUMMARY_MEANING[k]] for k, v in summary.items()])]
    if cs:
        lines += ["", "C map at q1 = q2 = 1:",
                  table(["c", "C(c)"], [[fmt(c), fmt(v, dps)] for c, v in zip(cs, cvals,
                                                                             strict=True)])]
    if qs:
        lines += ["", "Q map (q = input second moment):",
                  table(["q", "Q(q)"], [[fmt(q), fmt(v, dps)] for q, v in zip(qs, qvals,
                                                                             strict=True)])]
    if args.formula or args.latex:
        from kernelshape.cli.formulas import formula_block

        block, text = formula_block(act, latex=args.latex)
        payload["formulas"] = block
        lines += ["", text]
    if args.series is not None:
        from kernelshape.cli.formulas import series_text
        from kernelshape.engine.series import cmap_series

        with Progress(f"series of {act.name} to c^{args.series}"):
            series = cmap_series(act, args.series, dps=dps or 30)
        payload["series"] = series.to_dict()
        lines += ["", series_text(series)]
    emit(args, payload, "\n".join(lines), dps)
    return 0


# --------------------------------------------------------------------------- shape

def solution_payload(sol: Any, net: Any, spec: str, seconds: float,
                     output: str | None) -> dict[str, Any]:
    """The JSON view of a Solution (INTERFACE.md keys first)."""
    payload: dict[str, Any] = {
        "method": sol.method,
        "targets": dict(sol.targets),
        "activations": {k: dict(v) for k, v in sol.params.items()},
        "local_targets": {k: dict(v) for k, v in sol.local_targets.items()},
        "residuals": {k: dict(v) for k, v in sol.residuals.items()},
        "max_residual": sol.max_residual,
        "formulas": formulas(sol),
        "network": {"spec": getattr(net, "spec", None) or spec,
                    "nonlinear_layers": len(net.nonlinear_nodes)},
        "warnings": list(getattr(sol, "warnings", []) or []),
        "seconds": round(seconds, 3),
        "output": output,
    }
    check = network_check(sol, net)
    if check is not None:
        payload["network_check"] = check
    alternatives = getattr(sol, "alternatives", None)
    if alternatives:
        payload["alternatives"] = {k: list(v) for k, v in alternatives.items()}
    if sol.eoc:
        payload["eoc"] = {k: dict(v) for k, v in sol.eoc.items()}
    return payload


def network_check(sol: Any, net: Any) -> dict[str, Any] | None:
    """Re-evaluate the network condition from the certified local values (one activation key).

    dks: max over subnetworks of C'_f(1) (target zeta); tat: max of C''_f(1) (target tau);
    tat with Leaky ReLU: max of C_f(0) (target eta), as recorded by the solver.
    """
    keys = list(sol.local_targets)
    if len(keys) != 1:
        return None
    local = sol.local_targets[keys[0]]
    res = sol.residuals.get(keys[0], {})
    targets = sol.targets
    if sol.method == "dks" and "zeta" in targets and "c_slope_1" in local:
        quantity, target = "max_f C'_f(1)", targets["zeta"]
        value = net.max_slope(local["c_slope_1"] + res.get("c_slope_1", 0.0))
    elif sol.method == "tat" and "tau" in targets and "c_curv_1" in local:
        quantity, target = "max_f C''_f(1)", targets["tau"]
        value = net.max_curvature(local["c_curv_1"] + res.get("c_curv_1", 0.0))
    elif sol.method == "tat" and "eta" in targets and "network_c_value_0" in res:
        quantity, target = "max_f C_f(0)", targets["eta"]
        value = targets["eta"] + res["network_c_value_0"]
    else:
        return None
    return {"quantity": quantity, "target": float(target), "value": float(value),
            "residual": float(value) - float(target)}


def formulas(sol: Any) -> dict[str, str]:
    """Key -> formula of the transformed activation."""
    return {key: sol.transformed(key).formula for key in sol.transforms}


def solution_text(payload: Mapping[str, Any], dps: int | None = None) -> str:
    """People's view of a solution: constants, formulas, certificate."""
    targets = ", ".join(f"{k} = {fmt(v, dps)}" for k, v in payload["targets"].items()) or "none"
    net = payload["network"]
    lines = [f"network   {net['spec']}  ({net['nonlinear_layers']} nonlinear layers)",
             f"method    {payload['method']}   targets: {targets}",
             f"solved in {payload['seconds']:.2f} s", ""]
    for key, params in payload["activations"].items():
        lines.append(f"activation {key}:  {payload['formulas'].get(key, '')}")
        lines.append(table(["constant", "value"], [[k, fmt(v, dps)] for k, v in params.items()]))
        local = payload["local_targets"].get(key, {})
        res = payload["residuals"].get(key, {})
        rows = [[cond, fmt(target, dps), fmt_short(res.get(cond, float("nan")))]
                for cond, target in local.items()]
        rows += [[cond, "-", fmt_short(r)] for cond, r in res.items() if cond not in local]
        if rows:
            lines.append("")
            lines.append(table(["local condition", "target", "residual"], rows))
        found = [dict(alt) for alt in payload.get("alternatives", {}).get(key, [])]
        if found:
            columns = list(dict.fromkeys(k for alt in found for k in alt))
            lines += ["", f"all solutions found ({len(found)}):",
                      table(columns, [[fmt(alt.get(c, "-"), dps) for c in columns]
                                      for alt in found])]
        lines.append("")
    for key, block in (payload.get("eoc") or {}).items():
        lines.append(f"edge of chaos ({key}): " + ", ".join(f"{k} = {fmt(v, dps)}"
                                                             for k, v in block.items()))
    check = payload.get("network_check")
    if check:
        lines.append(f"network condition: {check['quantity']} = {fmt(check['value'])} "
                     f"(target {fmt(check['target'])}, residual {fmt_short(check['residual'])})")
    lines.append(f"certificate: max |residual| of the local conditions = "
                 f"{fmt_short(payload['max_residual'])}")
    for warning in payload["warnings"]:
        lines.append(f"warning: {warning}")
    if payload.get("output"):
        lines.append(f"wrote {payload['output']}")
    return "\n".join(lines)


def shape(args: argparse.Namespace) -> int:
    """kernelshape shape."""
    from kernelshape.solve import shape as solve

    targets = {k: getattr(args, k) for k in TARGETS if getattr(args, k) is not None}
    output = check_output_path(args.output, "constants document") if args.output else None
    if args.torch is None and (args.input_shape or args.shortcut_weight is not None
                               or args.torch_activation):
        raise UsageError("--input-shape, --shortcut-weight and --torch-activation apply to "
                         "--torch only")
    if args.torch is not None and args.activation:
        raise UsageError("--activation applies to a preset --net SPEC, not to --torch")
    spec = args.net if args.torch is None else f"torch:{args.torch}"
    if args.activation:
        if len(args.activation) > 1:
            raise UsageError("give --activation once: a preset network has one activation "
                             f"option (got {', '.join(args.activation)})")
        spec = with_activation(spec, args.activation[0])
    from kernelshape.solve.options import check_targets

    check_targets(args.method, targets)   # before building the network
    if args.torch is not None:
        from kernelshape.cli.torch_model import traced_network

        net = traced_network(args.torch, args.input_shape, args.shortcut_weight,
                             args.torch_activation)
    else:
        net = load_network(spec)
    options: dict[str, Any] = {"method": args.method, **targets}
    if args.dps is not None:
        options["dps"] = args.dps
    if args.certify is not None:
        options["certify"] = args.certify
    if args.all_solutions:
        options["all_solutions"] = True
    with Progress(f"shaping {len(net.nonlinear_nodes)} nonlinear layers ({args.method})") as bar:
        sol = solve(net, **options)
    if output is not None:
        sol.save(output)
    payload = solution_payload(sol, net, spec, bar.elapsed,
                               os.fspath(output) if output is not None else None)
    extra = ""
    if args.formula:
        from kernelshape.cli.formulas import solved_conditions

        payload["conditions"], extra = solved_conditions(sol)
    if not args.json:
        for warning in payload["warnings"]:
            print(f"kernelshape shape: warning: {warning}", file=sys.stderr)
        payload_text = dict(payload, warnings=[])
        emit(args, payload, solution_text(payload_text, args.dps) + extra, args.dps)
    else:
        emit(args, payload, "", args.dps)
    return 0


# --------------------------------------------------------------------------- export


def export(args: argparse.Namespace) -> int:
    """kernelshape export."""
    from kernelshape.constants import atomic_write_text
    from kernelshape.export import export as generate
    from kernelshape.export import framework_name
    from kernelshape.solve.recheck import load_constants

    framework = framework_name(args.to)
    output = (check_output_path(args.output, f"{framework} module", inputs=(args.constants,))
              if args.output else None)
    if not os.path.isfile(args.constants):
        why = "is a directory" if os.path.isdir(args.constants) else "does not exist"
        raise UsageError(f"constants file {args.constants!r} {why}; make one with "
                         "'kernelshape shape --net SPEC --method dks -o constants.json'")
    doc = load_constants(args.constants, verify=not args.no_verify)
    source = generate(doc, to=framework, verify=False)
    payload: dict[str, Any] = {
        "framework": framework, "constants": args.constants, "method": doc["method"],
        "activations": list(doc["activations"]),
        "output": os.fspath(output) if output is not None else None,
        "bytes": len(source.encode("utf-8")),
    }
    if output is None:
        if args.json:
            payload["source"] = source
            emit(args, payload, "")
        else:
            sys.stdout.write(source)
        return 0
    atomic_write_text(output, source)
    text = (f"wrote {output} ({framework}, {payload['bytes']} bytes): method {doc['method']}, "
            f"activations {', '.join(payload['activations'])}")
    emit(args, payload, text)
    return 0
