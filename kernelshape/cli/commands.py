"""Subcommand handlers: activations, maps, shape, export, verify, plot, train.

Each handler takes the parsed ``argparse.Namespace`` and returns an exit code; with ``--json``
it hands one payload to ``args.emit_json`` (see :func:`kernelshape.cli.app.main`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from kernelshape.cli.output import (
    Progress,
    Unavailable,
    UsageError,
    check_output_dir,
    check_output_path,
    fmt,
    fmt_short,
    table,
)

TRANSFORM_KEYS = ("input_scale", "input_shift", "output_shift", "output_scale", "negative_slope")
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


def emit(args: argparse.Namespace, payload: Mapping[str, Any], text: str,
         dps: int | None = None) -> None:
    """Print ``payload`` as JSON (with --json) or ``text`` for people."""
    if getattr(args, "json", False) and args.emit_json is not None:
        args.emit_json(payload, dps)
    else:
        print(text)


def parse_list(text: str | None, option: str, what: str) -> list[float]:
    """Comma-separated numbers."""
    if text is None:
        return []
    values = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = float(item)
        except ValueError:
            raise UsageError(f"{option}: {item!r} is not a number; give {what} separated by "
                             f"commas, e.g. {option} 0,0.5,1") from None
        if not math.isfinite(value):
            raise UsageError(f"{option}: values must be finite numbers, got {item!r}")
        values.append(value)
    return values


def parse_transform(text: str) -> dict[str, float]:
    """The --transform JSON object, checked key by key."""
    allowed = ", ".join(TRANSFORM_KEYS)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--transform is not valid JSON ({exc.msg} at column {exc.colno}); "
                         "give an object such as '{\"input_scale\": 1.2, \"output_scale\": "
                         f"1.5}}' with keys {allowed}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--transform must be a JSON object with keys {allowed}, "
                         f"got {type(data).__name__}")
    unknown = sorted(set(data) - set(TRANSFORM_KEYS))
    if unknown:
        raise UsageError(f"--transform has unknown key(s) {', '.join(unknown)}; allowed: {allowed}")
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"--transform {key} must be a number, got {value!r}")
    return {k: float(v) for k, v in data.items()}


def parse_params(items: Sequence[str]) -> dict[str, float]:
    """--param KEY=VALUE options."""
    params: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param {item!r} is not KEY=VALUE, e.g. --param negative_slope=0.2")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--param {key.strip()}: {value!r} is not a number") from None
    return params


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
    from kernelshape.topology.spec import split_options

    name, _, rest = spec.strip().partition(":")
    options = [o for o in split_options(rest) if o.partition("=")[0].strip() != "activation"]
    return f"{name}:{','.join([*options, f'activation={act}'])}"


def optional_function(module: str, function: str, what: str, issue: str) -> Any:
    """``module.function`` from a kernelshape module that may not exist yet.

    Raises Unavailable (exit 1, "not available yet") when the module or the function is missing.
    """
    if importlib.util.find_spec(module) is None:
        raise Unavailable(f"{what} is not available yet ({module} is not installed; {issue})")
    found = getattr(importlib.import_module(module), function, None)
    if found is None:
        raise Unavailable(f"{what} is not available yet ({module} has no {function}; {issue})")
    return found


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

    cs = parse_list(args.c, "--c", "correlations c in [-1, 1]")
    bad = [c for c in cs if abs(c) > 1.0]
    if bad:
        raise UsageError(f"--c: correlations must lie in [-1, 1], got {fmt(bad[0])}")
    qs = parse_list(args.q, "--q", "second moments q > 0")
    bad = [q for q in qs if q <= 0.0]
    if bad:
        raise UsageError(f"--q: second moments must be > 0, got {fmt(bad[0])}")
    if args.dps is not None and not 5 <= args.dps <= 1000:
        raise UsageError(f"--dps must be between 5 and 1000, got {args.dps}")
    act = activation(args.act, **parse_params(args.param))
    if args.transform is not None:
        act = act.transformed(Transform(**parse_transform(args.transform)))
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
    emit(args, payload, "\n".join(lines), dps)
    return 0


# --------------------------------------------------------------------------- shape

OPTION_METHODS = {"zeta": ("dks",), "tau": ("tat",), "eta": ("tat",)}


def _check_targets(args: argparse.Namespace) -> dict[str, float]:
    """Method options that apply, with their basic ranges (before any solving)."""
    given = {k: getattr(args, k) for k in OPTION_METHODS if getattr(args, k) is not None}
    for key, value in given.items():
        if args.method not in OPTION_METHODS[key]:
            raise UsageError(f"--{key} applies to --method {'/'.join(OPTION_METHODS[key])} only, "
                             f"not to {args.method}")
        if not math.isfinite(value):
            raise UsageError(f"--{key} must be a finite number, got {value!r}")
    if "zeta" in given and given["zeta"] <= 1.0:
        raise UsageError(f"--zeta {fmt(given['zeta'])} is unattainable: the network C map has "
                         "C'(1) >= 1, with 1 only for a linear network; choose zeta > 1 "
                         "(default 1.5; smaller is closer to linear)")
    if "tau" in given and given["tau"] <= 0.0:
        raise UsageError(f"--tau {fmt(given['tau'])} is unattainable: the network C''(1) must "
                         "be > 0 for a nonlinear network; choose tau > 0 (default 0.3)")
    if "eta" in given and not 0.0 < given["eta"] < 1.0:
        raise UsageError(f"--eta {fmt(given['eta'])} is outside (0, 1): it is the network's "
                         "C(0) target for Leaky ReLU; choose 0 < eta < 1 (default 0.9)")
    return given


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
        "formulas": formulas(net, sol.params),
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
    eoc = _eoc_block(sol)
    if eoc:
        payload["eoc"] = eoc
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


def _eoc_block(sol: Any) -> dict[str, Any] | None:
    try:
        doc = sol.to_document()
    except Exception:  # noqa: BLE001 (optional extra)
        return None
    return doc.get("eoc")


def formulas(net: Any, params: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Key -> formula of the transformed activation."""
    from kernelshape.engine.activations import Transform

    out = {}
    for key, act in net.activations.items():
        p = params.get(key)
        if p is None:
            out[key] = act.formula
            continue
        t = {k: float(v) for k, v in p.items() if k in TRANSFORM_KEYS}
        try:
            out[key] = act.transformed(Transform(**t)).formula
        except (TypeError, ValueError):
            out[key] = act.formula
    return out


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


def solver() -> Any:
    """``kernelshape.solve.shape`` (Unavailable until the solver exists)."""
    return optional_function("kernelshape.solve", "shape", "the solver",
                             "it lands with issue 4, shaping solvers")


def shape(args: argparse.Namespace) -> int:
    """kernelshape shape."""
    targets = _check_targets(args)
    if args.dps is not None and not 5 <= args.dps <= 1000:
        raise UsageError(f"--dps must be between 5 and 1000, got {args.dps}")
    output = check_output_path(args.output, "constants document") if args.output else None
    spec = args.net
    if args.activation:
        if len(args.activation) > 1:
            raise UsageError("give --activation once: a preset network has one activation "
                             f"option (got {', '.join(args.activation)})")
        spec = with_activation(spec, args.activation[0])
    net = load_network(spec)
    shape_fn = solver()
    options: dict[str, Any] = {"method": args.method, **targets}
    if args.dps is not None:
        options["dps"] = args.dps
    if args.certify is not None:
        options["certify"] = args.certify
    if args.all_solutions:
        options["all_solutions"] = True
    with Progress(f"shaping {len(net.nonlinear_nodes)} nonlinear layers ({args.method})") as bar:
        sol = shape_fn(net, **options)
    if output is not None:
        sol.save(output)
    payload = solution_payload(sol, net, spec, bar.elapsed,
                               os.fspath(output) if output is not None else None)
    if not args.json:
        for warning in payload["warnings"]:
            print(f"kernelshape shape: warning: {warning}", file=sys.stderr)
        payload_text = dict(payload, warnings=[])
        emit(args, payload, solution_text(payload_text, args.dps), args.dps)
    else:
        emit(args, payload, "", args.dps)
    return 0


# --------------------------------------------------------------------------- export


def export(args: argparse.Namespace) -> int:
    """kernelshape export."""
    from kernelshape.constants import atomic_write_text, load_constants
    from kernelshape.export import export as generate
    from kernelshape.export import framework_name

    framework = framework_name(args.to)
    output = check_output_path(args.output, f"{framework} module") if args.output else None
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


# --------------------------------------------------------------------------- verify / plot


def verify(args: argparse.Namespace) -> int:
    """kernelshape verify: dispatched to ``kernelshape.verify.run_cli(args)``."""
    run_cli = optional_function("kernelshape.verify", "run_cli", "this command",
                                "it lands with issue 6, theory checks and plots")
    return int(run_cli(args) or 0)


def plot(args: argparse.Namespace) -> int:
    """kernelshape plot: dispatched to ``kernelshape.plots.run_cli(args)``."""
    run_cli = optional_function("kernelshape.plots", "run_cli", "this command",
                                "it lands with issue 6, theory checks and plots")
    return int(run_cli(args) or 0)


# --------------------------------------------------------------------------- train


def _train_result(result: Any, seconds: float) -> dict[str, Any]:
    history = list(result.history or [])
    last = history[-1] if history else {}
    return {"status": result.status, "step": result.step, "message": result.message,
            "loss": last.get("loss"), "acc": last.get("acc"),
            "test_loss": result.test_loss, "test_acc": result.test_acc,
            "out": os.fspath(result.out) if result.out is not None else None,
            "seconds": round(seconds, 3)}


def train(args: argparse.Namespace) -> int:
    """kernelshape train (reference trainer)."""
    run_options = ("net", "method", "optimizer", "data", "seed", "out", "constants", "lr",
                   "batch_size", "dtype", "backend")
    if args.resume is not None:
        clash = [o for o in run_options if getattr(args, o) is not None]
        if clash:
            names = ", ".join("--" + o.replace("_", "-") for o in clash)
            raise UsageError(f"--resume continues a saved run with its own settings; drop {names}"
                             " (only --steps may change)")
        if not os.path.isdir(args.resume):
            raise UsageError(f"--resume {args.resume!r}: no such run directory")
    elif args.net is None:
        raise UsageError("give --net SPEC to start a run (e.g. --net "
                         "mlp:depth=20,width=256,input_dim=40,activation=tanh) "
                         "or --resume DIR to continue one")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a positive number, got {args.lr!r}")
    from kernelshape.train import resume as resume_run
    from kernelshape.train import train as train_run

    with Progress("training", enabled=False) as timer:
        if args.resume is not None:
            result = resume_run(args.resume, steps=args.steps, progress=None)
        else:
            if args.out is not None:
                check_output_dir(args.out, "run directory")
            constants = None
            if args.constants is not None:
                from kernelshape.constants import load_constants

                constants = load_constants(args.constants)
            options: dict[str, Any] = {
                "method": args.method or "dks", "optimizer": args.optimizer or "adam",
                "data": args.data or "mnist1d", "steps": 1000 if args.steps is None else args.steps,
                "seed": 0 if args.seed is None else args.seed, "out": args.out,
                "constants": constants, "lr": args.lr,
                "batch_size": 128 if args.batch_size is None else args.batch_size,
                "progress": None,
            }
            for name in ("dtype", "backend"):
                if getattr(args, name) is not None:
                    options[name] = getattr(args, name)
            net = load_network(args.net)
            result = train_run(net, **options)
    payload = _train_result(result, timer.elapsed)
    lines = [table(["field", "value"],
                   [["status", payload["status"]], ["steps", payload["step"]],
                    ["train loss (last logged)", fmt(payload["loss"])],
                    ["train accuracy (last logged)", fmt(payload["acc"])],
                    ["test loss", fmt(payload["test_loss"])],
                    ["test accuracy", fmt(payload["test_acc"])],
                    ["wall time", f"{payload['seconds']:.1f} s"],
                    ["run directory", payload["out"] or "-"]])]
    if result.status != "completed":
        lines.append(f"message: {result.message}")
    emit(args, payload, "\n".join(lines))
    if result.status != "completed":
        print(f"kernelshape train: {result.status}: {result.message}", file=sys.stderr)
        return 1
    return 0
