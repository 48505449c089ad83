"""Text and JSON of the symbolic views: ``maps --formula/--latex/--series``, ``shape --formula``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sympy as sp

from kernelshape.cli.output import table
from kernelshape.engine.activations import Activation, activation
from kernelshape.engine.formulas import (
    ALPHA,
    BETA,
    DELTA,
    LOCAL_TEXT,
    kernel_formula,
    local_formulas,
    output_scale_formula,
    output_shift_formula,
    substituted,
)
from kernelshape.engine.series import CSeries

if TYPE_CHECKING:
    from kernelshape.solve import Solution


def formula_block(act: Activation, latex: bool) -> tuple[dict[str, Any], str]:
    """(JSON block, text) of the closed-form maps and the local conditions of ``act``; what
    does not exist is said in the text and as ``null`` with a reason."""
    show = sp.latex if latex else sp.sstr
    block: dict[str, Any] = {}
    lines = ["closed-form maps:"]
    try:
        formula = kernel_formula(act)
        block["maps"] = formula.to_dict()
        lines += ["  " + line for line in (formula.latex() if latex else formula.text())
                  .splitlines()]
    except ValueError as exc:
        block["maps"], block["maps_unavailable"] = None, str(exc)
        lines.append(f"  none: {exc}")
    lines.append("local conditions of gamma * (phi(alpha * x + beta) + delta), alpha > 0:")
    try:
        local = local_formulas(act)
        block["local"] = {k: sp.sstr(v) for k, v in local.items()}
        block["local_latex"] = {k: sp.latex(v) for k, v in local.items()}
        lines += [f"  {LOCAL_TEXT[k]} = {show(v)}" for k, v in local.items()]
    except ValueError as exc:
        block["local"], block["local_unavailable"] = None, str(exc)
        lines.append(f"  none: {exc}")
    return block, "\n".join(lines)


def series_text(series: CSeries) -> str:
    """The coefficients of a certified series and its bounds, as text."""
    rows = [[str(n), f"{float(b):.17g}"] for n, b in enumerate(series.coefficients)]
    slope, curve = (float(t) for t in series.slope_tails)
    return "\n".join([
        f"C(c) = sum_n b_n c^n at q = {series.q:g} (b_n = squared normalized Hermite "
        "coefficients, all >= 0):",
        table(["n", "b_n"], rows),
        f"|C(c) - partial sum| <= {float(series.tail):.3g} for |c| <= 1",
        f"C'(1) = {series.derivative_at_one(1):.15g} + (<= {slope:.3g});  "
        f"C''(1) = {series.derivative_at_one(2):.15g} + (<= {curve:.3g})"])


def solved_conditions(sol: Solution) -> tuple[dict[str, Any], str]:
    """(JSON block, text): per activation the local conditions as formulas, the exact output
    scale from Q(1) = 1, and each formula at the solution (30 digits)."""
    block: dict[str, Any] = {}
    lines = ["", "local conditions as formulas (alpha = input_scale, beta = input_shift, "
             "delta = output_shift, gamma = output_scale; Phi, phi: standard normal cdf, pdf):"]
    for key, act in sol.activations.items():
        transform = sol.transforms[key]
        base = act.base
        if transform.negative_slope is not None:
            base = activation("leaky_relu", negative_slope=transform.negative_slope)
        try:
            formulas = local_formulas(base)
            if transform.negative_slope is not None:  # TAT Leaky ReLU: only gamma and a vary
                fixed = {ALPHA: 1, BETA: 0, DELTA: 0}
                formulas = {k: sp.simplify(v.subs(fixed)) for k, v in formulas.items()}
        except ValueError as exc:
            block[key] = {"unavailable": str(exc)}
            lines.append(f"  {key}: {exc}")
            continue
        targets = sol.local_targets.get(key, {})
        values = substituted(formulas, transform)
        entry = {"formulas": {k: sp.sstr(v) for k, v in formulas.items()},
                 "output_scale": sp.sstr(output_scale_formula(formulas)),
                 "at_solution": {k: sp.sstr(v) for k, v in values.items()}}
        if sol.method == "dks":
            entry["output_shift"] = sp.sstr(output_shift_formula(formulas))
        block[key] = entry
        lines.append(f"  {key}:")
        for name, formula in formulas.items():
            if name in targets:
                lines.append(f"    {LOCAL_TEXT[name]} = {sp.sstr(formula)} = "
                             f"{targets[name]:.17g}   (at the solution: "
                             f"{sp.sstr(values[name])})")
        if "output_shift" in entry:
            lines.append(f"    exact: delta = {entry['output_shift']}  (from C(0) = 0)")
        lines.append(f"    exact: gamma = {entry['output_scale']}  (from Q(1) = 1)")
    return block, "\n".join(lines)
