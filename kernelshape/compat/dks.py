"""The official ``dks`` package's activation-transform API, solved by kernelshape.

```python
# before: from dks.base import activation_transform
from kernelshape.compat import dks as activation_transform

acts = activation_transform.get_transformed_activations(
    ("softplus",), method="DKS", dks_params={"c_slope_1_target": 1.5},
    subnet_max_func=my_subnet_max_func)
acts["softplus"](np.linspace(-1, 1, 5))
```

Same signature, defaults, parameter dictionaries and error conditions as
``dks.base.activation_transform.get_transformed_activations``. The work is done by
:func:`kernelshape.solve.shape` on an adapter (:class:`DksRequest`) that exposes the user's
hand-written ``max_slope_func`` / ``max_curv_func`` / ``subnet_max_func`` as a network
description, so the answers carry kernelshape's certificates and canonical root choice.

Differences from the official package (all documented in ``docs/solving.md``):

* constants are exact to ~1e-12 (certified by an independent quadrature) rather than to the
  official quadrature's accuracy (~1e-5 for ReLU and SELU, whose kinks it does not split at);
* the network-level targets are met to ~1e-15 (the official bisection stops at 1e-8);
* among several roots kernelshape returns its canonical one, and the TAT stability filter is
  ``|Q''(1)| <= tau_local`` instead of ``input_scale * output_scale < 2``;
* ``activation_names`` may also contain any other kernelshape activation (name or expression).

``root_choice="official"`` (on every function here) returns instead the root the official
package's own search lands on: ``scipy.optimize.root`` (``hybr``) from its fixed starting
points in its order (input_scale 1.0, 0.1; input_shift 0, 1, -1; TAT: output_shift 0, 1, -1),
the first success not rejected by its TAT rule ``input_scale * output_scale >= 2``, run on
kernelshape's exact maps and snapped to the certified root it converged to. At TAT tanh with
``c_curve_target = 4.5`` this is the mirrored root ``-phi_hat(-x)`` the official package
returns; elsewhere the two choices coincide in the official test cases.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize

from kernelshape.engine.activations import Activation, Transform, activation
from kernelshape.engine.maps import local_summary
from kernelshape.solve import Solution, certificate, shape

__all__ = [
    "DksRequest",
    "get_activations_params",
    "get_solution",
    "get_transformed_activations",
]

logger = logging.getLogger(__name__)

# the official dks package's own defaults (part of the API this module mirrors, so written
# here rather than taken from kernelshape.solve.options)
DKS_DEFAULTS = {"c_slope_1_target": 1.5, "local_q_slope_target": 1.0}
TAT_DEFAULTS = {"c_val_0_target": 0.9, "c_curve_target": 0.3}
ROOT_CHOICES = ("canonical", "official")
# the official package's fixed starting points, tried in this order (itertools.product)
OFFICIAL_STARTS = {"input_scale": (1.0, 0.1), "input_shift": (0.0, 1.0, -1.0),
                   "output_shift": (0.0, 1.0, -1.0)}
SNAP_TOLERANCE = 1e-5  # relative distance between the official search's root and a listed one
METHODS = {"DKS": "dks", "TAT": "tat", "untransformed": "none"}

RFn = Callable[[float], float]
SubnetMaxFunc = Callable[[float, RFn], float]
ActivationGetter = Callable[[str], Callable[..., Any]]


class DksRequest:
    """A network description built from dks-style callables (what ``shape`` needs).

    ``activations`` maps each requested name to its kernelshape activation;
    ``max_slope`` / ``max_curvature`` / ``subnet_max`` call the user's functions. When only
    ``subnet_max_func`` is given, the other two are derived from it as the official package
    does: ``max_slope(xi) = M(1, y -> xi y)``, ``max_curvature(t) = M(0, y -> y + t)``.
    """

    def __init__(self, activation_names: Iterable[str],
                 max_slope_func: Callable[[float], float] | None = None,
                 max_curv_func: Callable[[float], float] | None = None,
                 subnet_max_func: SubnetMaxFunc | None = None) -> None:
        self.activations: dict[str, Activation] = {
            name: activation(name) for name in activation_names}
        self._max_slope = max_slope_func
        self._max_curv = max_curv_func
        self._subnet_max = subnet_max_func

    def subnet_max(self, x: float, r: RFn) -> float:
        """``M_{f,r}(x)`` from the user's ``subnet_max_func`` (called with plain floats)."""
        if self._subnet_max is None:
            raise ValueError("Must supply 'subnet_max_func' if using TAT with Leaky ReLU "
                             "activation functions.")
        return float(self._subnet_max(float(x), lambda y: float(r(y))))

    def max_slope(self, xi: float) -> float:
        if self._max_slope is not None:
            return float(self._max_slope(float(xi)))
        if self._subnet_max is None:
            raise ValueError("Must supply 'subnet_max_func' if using DKS and not passing in "
                             "'max_slope_func'.")
        xi = float(xi)
        return self.subnet_max(1.0, lambda y: xi * y)

    def max_curvature(self, tau: float) -> float:
        if self._max_curv is not None:
            return float(self._max_curv(float(tau)))
        if self._subnet_max is None:
            raise ValueError("Must supply 'subnet_max_func' if using TAT with smooth activation "
                             "functions and not passing in 'max_curv_func'.")
        tau = float(tau)
        return self.subnet_max(0.0, lambda y: y + tau)

    def __repr__(self) -> str:
        return f"DksRequest({list(self.activations)})"


def _with_defaults(params: Mapping[str, float] | None, defaults: Mapping[str, float],
                   what: str) -> dict[str, float]:
    params = dict(params or {})
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"Parameter dictionary had unrecognized keys: '{unknown}' "
                         f"({what} keys are {sorted(defaults)})")
    return {**defaults, **params}


def _names(activation_names: Sequence[str]) -> tuple[str, ...]:
    if not isinstance(activation_names, list | tuple):
        raise ValueError("activation_names argument must be a list or tuple of strings.")
    return tuple(activation_names)


def get_solution(activation_names: Sequence[str], method: str = "DKS",
                 dks_params: Mapping[str, float] | None = None,
                 tat_params: Mapping[str, float] | None = None,
                 max_slope_func: Callable[[float], float] | None = None,
                 max_curv_func: Callable[[float], float] | None = None,
                 subnet_max_func: SubnetMaxFunc | None = None,
                 certify: str = "float", root_choice: str = "canonical") -> Solution:
    """The kernelshape :class:`~kernelshape.solve.Solution` of a dks-style request
    (constants, certificate residuals, alternatives, warnings); ``root_choice`` "canonical"
    (kernelshape's) or "official" (the official package's search, module docstring)."""
    if root_choice not in ROOT_CHOICES:
        raise ValueError(f"root_choice must be one of {', '.join(ROOT_CHOICES)}; got "
                         f"{root_choice!r}")
    every = root_choice == "official"
    names = _names(activation_names)
    dks = _with_defaults(dks_params, DKS_DEFAULTS, "dks_params")
    tat = _with_defaults(tat_params, TAT_DEFAULTS, "tat_params")
    if method not in METHODS:
        raise ValueError(f"Unrecognized value for argument 'method': {method}")
    request = DksRequest(names, max_slope_func, max_curv_func, subnet_max_func)
    if method == "DKS":
        if dks["c_slope_1_target"] <= 1.0:
            raise ValueError("Invalid value for DKS 'c_slope_1_target' parameter. Must be a "
                             "float greater than 1.0.")
        if max_slope_func is None and subnet_max_func is None:
            raise ValueError("Must supply 'subnet_max_func' if using DKS and not passing in "
                             "'max_slope_func'.")
        solution = shape(request, "dks", zeta=float(dks["c_slope_1_target"]),
                         local_q_slope=float(dks["local_q_slope_target"]), certify=certify,
                         all_solutions=every)
    elif method == "TAT" and "leaky_relu" not in names:
        if "relu" in names:
            raise ValueError("Standard ReLU is not supported with TAT. Use leaky ReLU instead.")
        if tat["c_curve_target"] <= 0.0:
            raise ValueError("Invalid value for TAT 'c_curve_target' parameter. Must be a float "
                             "greater than 0.0.")
        if max_curv_func is None and subnet_max_func is None:
            raise ValueError("Must supply 'subnet_max_func' if using TAT with smooth activation "
                             "functions and not passing in 'max_curv_func'.")
        solution = shape(request, "tat", tau=float(tat["c_curve_target"]), certify=certify,
                         all_solutions=every)
    elif method == "TAT":
        if len(names) > 1:
            raise ValueError("When using Leaky ReLU with TAT it must be the only activation "
                             "function.")
        if not 0.0 <= tat["c_val_0_target"] <= 1.0:
            raise ValueError("Invalid value for TAT 'c_val_0_target' parameter. Must be a float "
                             "between 0.0 and 1.0.")
        if subnet_max_func is None:
            raise ValueError("Must supply 'subnet_max_func' if using TAT with Leaky ReLU "
                             "activation functions.")
        solution = shape(request, "tat", eta=float(tat["c_val_0_target"]), certify=certify)
    else:  # untransformed
        solution = shape(request, "none")
    for text in solution.warnings:
        logger.warning(text)
    if every and solution.method in ("dks", "tat"):
        solution = _official_choice(solution, certify)
    return solution


def _official_residuals(act: Activation, method: str, local: Mapping[str, float],
                        p: np.ndarray) -> tuple[np.ndarray, Transform]:
    """The official search's residual vector at parameters ``p`` (its output shift and scale
    computed from the rest), on kernelshape's maps."""
    scale, shift = float(p[0]), float(p[1])
    base = act.transformed(Transform(input_scale=scale, input_shift=shift))
    q0 = local_summary(base)["q_value"]
    if method == "dks":  # C(0) = 0: the output shift cancels the mean
        mean = (local_summary(base.transformed(Transform(output_shift=1.0)))["q_value"]
                - q0 - 1.0) / 2.0
        out_shift = -mean
    else:
        out_shift = float(p[2])
    shifted = act.transformed(Transform(input_scale=scale, input_shift=shift,
                                        output_shift=out_shift))
    out_scale = 1.0 / math.sqrt(local_summary(shifted)["q_value"])
    transform = Transform(input_scale=scale, input_shift=shift, output_shift=out_shift,
                          output_scale=out_scale)
    values = local_summary(act.transformed(transform))
    keys = ["q_slope", "c_slope_1"] + (["c_curv_1"] if method == "tat" else [])
    return np.array([values[k] - local[k] for k in keys]), transform


def _official_root(act: Activation, method: str, local: Mapping[str, float]) -> Transform:
    """The transform the official package's starting points and ``hybr`` land on."""
    names = ["input_scale", "input_shift"] + (["output_shift"] if method == "tat" else [])
    for start in itertools.product(*(OFFICIAL_STARTS[n] for n in names)):
        def residuals(p: np.ndarray) -> np.ndarray:
            try:
                value = _official_residuals(act, method, local, p)[0]
            except (ValueError, ZeroDivisionError, OverflowError):
                return np.full(len(names), 1e6)
            return value if np.all(np.isfinite(value)) else np.full(len(names), 1e6)

        sol = optimize.root(residuals, np.array(start), method="hybr")
        if not sol.success:
            continue
        transform = _official_residuals(act, method, local, sol.x)[1]
        if method == "tat" and transform.input_scale * transform.output_scale >= 2.0:
            continue
        return transform
    raise ValueError(f"{act.name}: the official package's starting points find no root here; "
                     "use root_choice='canonical'")


KEYS = ("input_scale", "input_shift", "output_shift", "output_scale")


def _distance(want: np.ndarray, record: Mapping[str, Any]) -> float:
    """Largest relative difference between a root record's constants and ``want``."""
    got = np.array([record[k] for k in KEYS])
    return float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))


def _is_odd(act: Activation) -> bool:
    """Whether ``phi(-x) = -phi(x)`` (to rounding, on a grid over [-8, 8])."""
    x = np.linspace(0.05, 8.0, 160)
    with np.errstate(all="ignore"):
        return bool(np.allclose(act(-x), -act(x), rtol=1e-13, atol=1e-15))


def _official_choice(solution: Solution, certify: str) -> Solution:
    """``solution`` with each smooth activation's transform replaced by the certified root
    nearest to the one the official search finds."""
    transforms, residuals = dict(solution.transforms), dict(solution.residuals)
    for key, act in solution.activations.items():
        if act.name in ("relu", "leaky_relu") or key not in solution.alternatives:
            continue
        local = solution.local_targets[key]
        target = _official_root(act, solution.method, local)
        distance = functools.partial(_distance, np.array([getattr(target, k) for k in KEYS]))
        candidates = list(solution.alternatives[key])
        if _is_odd(act):  # kernelshape lists one of each mirrored pair (x, phi) -> (-x, -phi)
            candidates += [{**r, "input_shift": -r["input_shift"],
                            "output_shift": -r["output_shift"]} for r in candidates]
        nearest = min(candidates, key=distance)
        if distance(nearest) > SNAP_TOLERANCE:
            raise ValueError(f"{act.name}: the official search lands on {target}, which is "
                             "not among the certified roots; use root_choice='canonical'")
        chosen = Transform(**{k: float(nearest[k]) for k in KEYS})
        res = certificate.residuals(act.transformed(chosen), local, certify)
        if max(abs(v) / max(1.0, abs(local[k])) for k, v in res.items()) > 1e-12:
            raise ValueError(f"{act.name}: the official search's root {chosen} does not pass "
                             "the certificate; use root_choice='canonical'")
        transforms[key], residuals[key] = chosen, res
    return dataclasses.replace(solution, transforms=transforms, residuals=residuals)


def _official_keys(name: str, method: str, transform: Transform) -> dict[str, float]:
    """The parameter dict in the official package's layout (same keys per case)."""
    params = transform.as_dict()
    if name == "leaky_relu" and method == "TAT":
        return {"output_scale": params["output_scale"],
                "negative_slope": params["negative_slope"]}
    if name == "leaky_relu":
        params.pop("input_scale")  # the slope replaces the input scale as unknown
    return params


def get_activations_params(activation_names: Sequence[str], method: str = "DKS",
                           dks_params: Mapping[str, float] | None = None,
                           tat_params: Mapping[str, float] | None = None,
                           max_slope_func: Callable[[float], float] | None = None,
                           max_curv_func: Callable[[float], float] | None = None,
                           subnet_max_func: SubnetMaxFunc | None = None,
                           root_choice: str = "canonical") -> dict[str, dict]:
    """name -> transform parameters, as the official ``_get_activations_params`` returns them
    (``input_scale``, ``input_shift``, ``output_shift``, ``output_scale``; Leaky-ReLU:
    ``negative_slope`` instead of ``input_scale``, and only ``output_scale`` and
    ``negative_slope`` under TAT)."""
    if method == "untransformed":
        raise ValueError(f"Unrecognized value for argument 'method': {method}")
    solution = get_solution(activation_names, method, dks_params, tat_params, max_slope_func,
                            max_curv_func, subnet_max_func, root_choice=root_choice)
    return {name: _official_keys(name, method, solution.transforms[name])
            for name in solution.transforms}


def _wrap(fn: Callable[..., Any], params: Mapping[str, float]) -> Callable[[Any], Any]:
    """``output_scale * (fn(input_scale * x + input_shift, **extra) + output_shift)`` with a
    framework activation ``fn`` (extra: ``negative_slope``)."""
    params = dict(params)
    scale = params.pop("input_scale", None)
    shift = params.pop("input_shift", None)
    out_shift = params.pop("output_shift", None)
    out_scale = params.pop("output_scale", None)

    def transformed(x: Any) -> Any:
        if scale is not None:
            x = x * float(scale)
        if shift is not None:
            x = x + float(shift)
        y = fn(x, **params)
        if out_shift is not None:
            y = y + float(out_shift)
        if out_scale is not None:
            y = y * float(out_scale)
        return y

    return transformed


def get_transformed_activations(
        activation_names: Sequence[str], method: str = "DKS",
        dks_params: Mapping[str, float] | None = None,
        tat_params: Mapping[str, float] | None = None,
        max_slope_func: Callable[[float], float] | None = None,
        max_curv_func: Callable[[float], float] | None = None,
        subnet_max_func: SubnetMaxFunc | None = None,
        activation_getter: ActivationGetter | None = None,
        root_choice: str = "canonical") -> dict[str, Callable[[Any], Any]]:
    """Transformed activation functions by the DKS or TAT method (official ``dks`` API).

    Args mirror ``dks.base.activation_transform.get_transformed_activations``:
    ``activation_names`` a list/tuple of names; ``method`` "DKS", "TAT" or "untransformed";
    ``dks_params`` keys ``c_slope_1_target`` (zeta, 1.5) and ``local_q_slope_target`` (1.0);
    ``tat_params`` keys ``c_val_0_target`` (eta, 0.9, Leaky-ReLU) and ``c_curve_target``
    (tau, 0.3, smooth activations); ``max_slope_func(xi)``, ``max_curv_func(tau)`` and
    ``subnet_max_func(x, r_fn)`` describe the network (the first two are derived from the
    third when not given); ``activation_getter(name)`` returns the untransformed framework
    activation (Leaky-ReLU must accept ``negative_slope=``). Without a getter the returned
    callables are kernelshape activations (numpy, vectorized). ``root_choice="official"``
    returns the official package's root instead of kernelshape's canonical one.

    Returns a dict name -> transformed activation.
    """
    names = _names(activation_names)
    if method == "untransformed":
        if activation_getter is None:
            return {name: activation(name) for name in names}
        return {name: activation_getter(name) for name in names}
    solution = get_solution(names, method, dks_params, tat_params, max_slope_func,
                            max_curv_func, subnet_max_func, root_choice=root_choice)
    if activation_getter is None:
        return {name: solution.transformed(name) for name in names}
    return {name: _wrap(activation_getter(name),
                        _official_keys(name, method, solution.transforms[name]))
            for name in names}

