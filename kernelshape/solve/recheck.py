"""Re-derive what a constants document claims, from the network and method it records.

A document is trusted only as far as it can be recomputed: the network comes from its recorded
description (or SPEC), the local conditions from its method and targets through the same
network-to-local derivation the solver uses, and every transformed activation's local maps are
evaluated afresh and compared with those conditions at ``RECHECK_TOLERANCE`` (fixed here; the
document's own ``local_targets``, ``residuals`` and tolerances are never consulted). An edited
constant, target, method label or activation is refused with the numbers that disagree.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kernelshape.constants import entry_transform, read_document, validate_document
from kernelshape.engine.activations import Activation, activation
from kernelshape.engine.maps import local_summary
from kernelshape.solve.eoc import edge_of_chaos
from kernelshape.solve.network_targets import (
    dks_local_slope,
    tat_leaky_slope,
    tat_local_curvature,
)
from kernelshape.solve.options import METHODS, check_targets, default
from kernelshape.topology import Network, parse_spec

RECHECK_TOLERANCE = 1e-9  # |value - target| <= this * max(1, |target|)
#: the targets each method reads from a document (the rest take their defaults)
DOCUMENT_TARGETS = {"dks": ("zeta", "local_q_slope"), "tat": ("tau", "eta"),
                    "eoc": ("bias_variance",), "none": ()}


def document_network(doc: Mapping[str, Any]) -> Network | None:
    """The network a document records: its description, else its SPEC, else None."""
    block = doc["network"]
    if block.get("description") is not None:
        return Network.from_dict(block["description"])
    if block.get("spec"):
        return parse_spec(block["spec"])
    return None


def _base(entry: Mapping[str, Any]) -> Activation:
    params = dict(entry.get("params", {}))
    if entry.get("negative_slope") is not None:
        params["negative_slope"] = entry["negative_slope"]
    return activation(entry["activation"], **params)


def _expected(method: str, targets: dict[str, float], net: Network,
              acts: Mapping[str, Activation]) -> dict[str, dict[str, float]]:
    """The local conditions ``method`` imposes on every activation of ``net``."""
    if method == "dks":
        xi = dks_local_slope(net, targets["zeta"])
        out = {}
        for key, act in acts.items():
            local = {"q_value": 1.0, "q_slope": targets["local_q_slope"], "c_value_0": 0.0,
                     "c_slope_1": xi}
            if act.name == "relu":  # two constants: Q'(1) follows from the rest
                del local["q_slope"]
            out[key] = local
        return out
    if all(a.name == "leaky_relu" for a in acts.values()):
        return {key: {"q_value": 1.0, "q_slope": 1.0, "c_slope_1": 1.0} for key in acts}
    tau_local = tat_local_curvature(net, targets["tau"])
    return {key: {"q_value": 1.0, "q_slope": 1.0, "c_slope_1": 1.0, "c_curv_1": tau_local}
            for key in acts}


def _close(value: float, target: float) -> bool:
    return abs(value - target) <= RECHECK_TOLERANCE * max(1.0, abs(target))


def recheck_document(doc: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Recompute a validated document's claims; return ``{activation: {condition: residual}}``
    or raise ValueError naming every disagreement (module docstring)."""
    method = str(doc["method"]).lower()
    if method not in METHODS:
        raise ValueError(f"method {doc['method']!r} is not one of {', '.join(METHODS)}")
    given = {k: doc["targets"][k] for k in DOCUMENT_TARGETS[method] if k in doc["targets"]}
    targets = {k: given.get(k, default(k)) for k in DOCUMENT_TARGETS[method]}
    check_targets(method, targets)
    entries = doc["activations"]
    transformed = {k: _base(e).transformed(replace(entry_transform(e), negative_slope=None))
                   for k, e in entries.items()}
    failures: list[str] = []
    net = document_network(doc)
    if net is not None:
        keys = set(net.activation_keys)
        if keys != set(entries):
            raise ValueError(f"the document's activations {sorted(entries)} are not those of "
                             f"its recorded network {sorted(keys)}")
        for key, act in net.activations.items():
            named = activation(entries[key]["activation"], **entries[key].get("params", {}))
            if named != act and named.name != "leaky_relu":  # leaky: the slope is a constant
                failures.append(f"{key}: the document says {named!r}, the recorded network "
                                f"{act!r}")
    if method in ("none", "eoc"):
        for key, entry in entries.items():
            if not entry_transform(entry).is_identity:
                failures.append(f"{key}: method {method} uses the activation untransformed, "
                                f"but the document transforms it ({entry_transform(entry)})")
        if method == "eoc":
            for key in entries:
                failures += _eoc_failures(key, _base(entries[key]), doc.get("eoc", {}).get(key),
                                          targets["bias_variance"])
        if failures:
            raise ValueError("the constants do not match their method: " + "; ".join(failures))
        return {}
    if net is None:
        raise ValueError(f"the document records no network, so its {method} constants cannot "
                         "be re-derived (they depend on the network); load it with "
                         "verify=False (CLI: --no-verify) only if you trust its source")
    acts = {k: _base(e) for k, e in entries.items()}
    expected = _expected(method, targets, net, acts)
    recorded = doc.get("local_targets") or {}
    for key, conditions in expected.items():
        claimed = recorded.get(key) or {}
        if set(claimed) != set(conditions) or not all(
                isinstance(claimed[c], int | float) and _close(float(claimed[c]), t)
                for c, t in conditions.items()):
            failures.append(f"{key}: the recorded local_targets {claimed} are not those "
                            f"{method} imposes on the recorded network {conditions}")
    if method == "tat" and all(a.name == "leaky_relu" for a in acts.values()):
        slope, _ = tat_leaky_slope(net, targets["eta"])
        for key, entry in entries.items():
            t = entry_transform(entry)
            got = t.negative_slope if t.negative_slope is not None else \
                acts[key].params.get("negative_slope")
            if got is None or not _close(float(got), slope):
                failures.append(f"{key}.negative_slope = {got!r}, but eta = {targets['eta']!r} "
                                f"on the recorded network needs {slope!r}")
            scale = math.sqrt(2.0 / (1.0 + slope**2))
            if not _close(t.output_scale, scale):
                failures.append(f"{key}.output_scale = {t.output_scale!r}, expected {scale!r}")
    found: dict[str, dict[str, float]] = {}
    for key, conditions in expected.items():
        summary = local_summary(transformed[key])
        found[key] = {}
        for cond, target in conditions.items():
            value = float(summary[cond])
            found[key][cond] = value - target
            if not _close(value, target):
                failures.append(f"{key}.{cond} = {value!r}, but {method} with "
                                f"{_targets_text(targets)} on the recorded network needs "
                                f"{target!r}")
    if failures:
        raise ValueError("the constants do not satisfy what their document claims: "
                         + "; ".join(failures))
    return found


def _targets_text(targets: Mapping[str, float]) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in targets.items()) or "no targets"


def _eoc_failures(key: str, act: Activation, entry: Mapping[str, float] | None,
                  bias_variance: float) -> list[str]:
    if entry is None:
        return [f"{key}: an eoc document needs an eoc entry for every activation"]
    fresh = edge_of_chaos(act, bias_variance)
    return [f"{key}.eoc.{name} = {entry[name]!r}, recomputed {fresh[name]!r}"
            for name in ("weight_variance", "bias_variance", "q_fixed_point")
            if not _close(float(entry[name]), float(fresh[name]))]


def load_constants(path: str | os.PathLike[str], verify: bool = True) -> dict[str, Any]:
    """Read a constants document (validated against its schema) and, with ``verify``, recheck
    its constants from the network and method it records (:func:`recheck_document`)."""
    doc = read_document(path)
    if verify:
        try:
            recheck_document(doc)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return doc


def checked(doc: Mapping[str, Any], verify: bool = True) -> dict[str, Any]:
    """A document given as data: validated, and rechecked with ``verify``."""
    doc = dict(doc)
    validate_document(doc)
    if verify:
        recheck_document(doc)
    return doc
