"""Assemble a dependency-free source file from a constants document."""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from kernelshape.export import _jax, _numpy, _pytorch, _tensorflow
from kernelshape.export.formula import base_formula, render

TEMPLATES: dict[str, ModuleType] = {
    "numpy": _numpy,
    "jax": _jax,
    "pytorch": _pytorch,
    "tensorflow": _tensorflow,
}
ALIASES = {"np": "numpy", "torch": "pytorch", "tf": "tensorflow", "keras": "tensorflow"}
TRANSFORM_FORMULA = "output_scale * (phi(input_scale * x + input_shift) + output_shift)"

_API_NAMES = {
    "numpy": "get_activation(name) -> function; scaled_uniform_orthogonal(rng, shape); "
             "zero_bias(shape); per_location_normalization(x)",
    "jax": "get_activation(name) -> function; scaled_uniform_orthogonal(key, shape); "
           "zero_bias(key, shape); per_location_normalization(x)",
    "pytorch": "get_activation(name) -> nn.Module; activation_fn(name) -> function; "
               "scaled_uniform_orthogonal_(weight); initialize_(module); "
               "per_location_normalization(x)",
    "tensorflow": "get_activation(name) -> keras Layer; activation_fn(name) -> function; "
                  "ScaledUniformOrthogonal(); per_location_normalization(x)",
}


def framework_name(to: str) -> str:
    """Canonical framework name for ``to`` (accepts np / torch / tf / keras aliases)."""
    key = ALIASES.get(str(to).lower(), str(to).lower())
    if key not in TEMPLATES:
        raise ValueError(
            f"unknown export target {to!r}: choose one of {', '.join(TEMPLATES)}"
        )
    return key


def _comment(text: Any) -> str:
    """One-line, ASCII-only rendering of untrusted text, safe inside a ``#`` comment."""
    return str(text).encode("unicode_escape").decode("ascii")


def _literal(value: Any, level: int = 0) -> str:
    """A Python literal for plain JSON data (floats at full repr precision)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        flat = repr(value)
        if not value or (len(flat) + 4 * level < 80 and "{" not in flat[1:]):
            return flat
        pad = "    " * (level + 1)
        items = "".join(f"{pad}{k!r}: {_literal(v, level + 1)},\n" for k, v in value.items())
        return "{\n" + items + "    " * level + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v, level + 1) for v in value) + "]"
    return repr(value)


def generate(doc: Mapping[str, Any], to: str) -> str:
    """Source text of the ``to`` module for a validated constants document ``doc``."""
    from kernelshape import __version__

    fw = TEMPLATES[framework_name(to)]
    names = list(doc["activations"])
    bases: list[str] = []
    formulas: dict[str, str] = {}
    for i, name in enumerate(names):
        entry = doc["activations"][name]
        try:
            node, text = base_formula(
                entry["activation"], entry["params"], entry.get("negative_slope")
            )
        except ValueError as exc:
            raise ValueError(f"activation {name!r}: {exc}") from None
        formulas[name] = f"phi(x) = {text}"
        bases.append(
            f"def _phi_{i}(x):\n"
            f"    # base activation of {_comment(name)}\n"
            f"    return {render(node)}\n"
        )
    cert = doc["certificate"]
    net = doc["network"]
    header = [
        f'"""Transformed activations for {fw.TITLE}, exported by kernelshape {__version__}.',
        "",
        "Generated file: plain code with no kernelshape import; regenerate it with",
        "`kernelshape export CONSTANTS.json --to FRAMEWORK` instead of editing it.",
        "",
        "Every activation computes",
        f"    phi_hat(x) = {TRANSFORM_FORMULA}",
        "with the constants in CONSTANTS (float64, full repr precision); FORMULAS gives phi.",
        "",
        "API: " + _API_NAMES[framework_name(to)].replace("; ", ";\n    ") + ".",
        "",
        fw.LAYOUT,
        '"""',
        f"# Constants made by kernelshape {_comment(doc['kernelshape_version'])} on "
        f"{_comment(doc['created'])} (format {_comment(doc['format_version'])}).",
        f"# Method: {_comment(doc['method'])}; targets: {_comment(doc['targets'])}",
        f"# Network: spec {_comment(net['spec'])}; hash {_comment(net['hash'])}",
        f"# Certificate: route {_comment(cert['route'])}, tolerance "
        f"{_comment(cert['tolerance'])}; max residual {_comment(doc['max_residual'])}",
        "# Activations:",
    ]
    for name in names:
        entry = doc["activations"][name]
        header.append(f"#   {_comment(name)}: {_comment(formulas[name])}")
        for key in ("input_scale", "input_shift", "output_shift", "output_scale",
                    "negative_slope"):
            if key in entry:
                header.append(f"#     {key} = {entry[key]!r}")
    meta = {
        "KERNELSHAPE_VERSION": doc["kernelshape_version"],
        "EXPORTED_BY": __version__,
        "FORMAT_VERSION": doc["format_version"],
        "METHOD": doc["method"],
        "TARGETS": doc["targets"],
        "NETWORK": {"spec": net["spec"], "hash": net["hash"]},
        "CERTIFICATE": cert,
        "MAX_RESIDUAL": doc["max_residual"],
        "FORMULA": TRANSFORM_FORMULA,
        "FORMULAS": formulas,
        "CONSTANTS": doc["activations"],
        "LOCAL_TARGETS": doc["local_targets"],
    }
    if "eoc" in doc:
        meta["EOC"] = doc["eoc"]
    meta_text = "\n".join(f"{k} = {_literal(v)}" for k, v in meta.items())
    base_map = "_BASE = {\n" + "".join(
        f"    {name!r}: _phi_{i},\n" for i, name in enumerate(names)
    ) + "}\n"
    parts = [
        "\n".join(header) + "\n",
        fw.IMPORTS,
        meta_text + "\n",
        fw.HELPERS,
        "\n\n".join(bases),
        base_map,
        fw.API,
    ]
    source = "\n\n".join(p.rstrip("\n") + "\n" for p in parts)
    compile(source, f"<kernelshape export to {to}>", "exec")  # sanity: valid syntax
    return source
