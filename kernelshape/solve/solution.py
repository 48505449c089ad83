"""The result of shaping a network: per-activation constants with their certificate."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernelshape.constants import build_document, save_document
from kernelshape.engine.activations import Activation, Transform


@dataclass
class Solution:
    """Constants for every activation key of a network, and how they were certified.

    ``params[key]`` is the dks-style dict (input_scale, input_shift, output_shift,
    output_scale, and negative_slope for Leaky-ReLU); ``local_targets[key]`` the local
    conditions it meets; ``residuals[key]`` value - target of each, by the independent
    certificate route; ``alternatives[key]`` every other root found (``all_solutions=True``);
    ``precise_params[key]`` the constants as N-digit strings when solved with ``dps=N``.
    """

    method: str
    targets: dict[str, float]
    activations: dict[str, Activation]
    transforms: dict[str, Transform]
    local_targets: dict[str, dict[str, float]]
    residuals: dict[str, dict[str, float]]
    certificate: dict[str, Any]
    network: Any = None
    alternatives: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    eoc: dict[str, dict[str, float]] | None = None
    precise_params: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, dict[str, float]]:
        return {key: t.as_dict() for key, t in self.transforms.items()}

    @property
    def max_residual(self) -> float:
        return max((abs(v) for r in self.residuals.values() for v in r.values()), default=0.0)

    def network_transforms(self) -> dict[str, Transform]:
        """Transforms under which the network's kernel maps (zero-bias layers that preserve q)
        describe this solution's initialization: the solved transforms; for EOC without
        biases ``input_scale = sigma_w`` (a weight variance ``sigma_w^2`` scales every
        pre-activation; exact for chains). EOC with biases has no such description."""
        if self.method != "eoc":
            return dict(self.transforms)
        assert self.eoc is not None
        if any(v["bias_variance"] != 0.0 for v in self.eoc.values()):
            raise ValueError("EOC with bias variance has no description as activation "
                             "transforms of the network (the biases add to q and to the "
                             "kernel); use kernelshape.solve.eoc_chain_states for chains")
        nodes = getattr(self.network, "nodes", ())
        if any(len(n.parents) > 1 or n.layer.role == "normalize" for n in nodes):
            raise ValueError("EOC weight variances are modelled as activation transforms "
                             "exactly only for chains (Dense -> activation -> ...); this "
                             "network has sums, concatenations or LayerNorm")
        return {k: Transform(input_scale=math.sqrt(v["weight_variance"]))
                for k, v in self.eoc.items()}

    def transformed(self, key: str) -> Activation:
        """The transformed activation for ``key``."""
        return self.activations[key].transformed(self.transforms[key])

    def to_document(self) -> dict[str, Any]:
        """The versioned constants document (see :mod:`kernelshape.constants`)."""
        entries = {}
        for key, act in self.activations.items():
            entry = {"activation": act.name, "params": dict(act.params)}
            entry.update(self.transforms[key].as_dict())
            if "negative_slope" in entry:
                entry["params"].pop("negative_slope", None)
            entries[key] = entry
        return build_document(
            method=self.method, targets=self.targets, activations=entries,
            local_targets=self.local_targets, residuals=self.residuals,
            network=self.network, certificate=self.certificate, eoc=self.eoc)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the constants document atomically; returns the path."""
        return save_document(self.to_document(), path)

    def summary(self) -> str:
        """Human-readable table of the constants and their certificate."""
        lines = [f"method: {self.method}   targets: "
                 + ", ".join(f"{k}={v!r}" for k, v in self.targets.items())]
        header = ("activation", "input_scale", "input_shift", "output_shift", "output_scale",
                  "max |residual|")
        rows = []
        for key, t in self.transforms.items():
            res = max((abs(v) for v in self.residuals.get(key, {}).values()), default=0.0)
            scale = f"{t.input_scale:.16g}"
            if t.negative_slope is not None:
                scale += f" (negative_slope {t.negative_slope:.16g})"
            rows.append((key, scale, f"{t.input_shift:.16g}", f"{t.output_shift:.16g}",
                         f"{t.output_scale:.16g}", f"{res:.1e}"))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        for key in self.transforms:
            lines.append(f"{key}: {self.transformed(key).formula}")
        if self.eoc:
            for key, v in self.eoc.items():
                lines.append(f"{key}: EOC weight_variance={v['weight_variance']:.16g} "
                             f"bias_variance={v['bias_variance']:.16g} "
                             f"q*={v['q_fixed_point']:.16g}")
        lines.append(f"certificate: {self.certificate.get('route')} "
                     f"(max |residual| {self.max_residual:.1e})")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Solution(method={self.method!r}, params={self.params!r})"
