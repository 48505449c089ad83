"""Assemble a dependency-free source file from a constants document.

A generated file is: a docstring and provenance comments, the framework's runtime module
(``kernelshape/runtime/<framework>.py``, copied below its docstring), the document's metadata
(``CONSTANTS``, ``FORMULAS``, ...) and one base function per activation, printed from the same
expression tree the engine and the trainer use.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from importlib import resources
from typing import Any, NamedTuple

from kernelshape import __version__
from kernelshape.engine.activations import activation
from kernelshape.engine.expression import Node, fold, to_source


class Framework(NamedTuple):
    title: str
    layout: str  # the weight layout the initializer expects
    api: str  # what the generated file defines


FRAMEWORKS: dict[str, Framework] = {
    "numpy": Framework(
        "numpy",
        "Weight layout: dense kernels are [in, out] (y = x @ W); convolution kernels are\n"
        "[*spatial, in, out] (HWIO, as in flax / haiku / lax.conv_general_dilated).",
        "get_activation(name) -> function; scaled_uniform_orthogonal(rng, shape); "
        "zero_bias(shape); per_location_normalization(x)"),
    "jax": Framework(
        "JAX",
        "Weight layout: dense kernels are [in, out] (y = x @ W, as flax.linen.Dense / "
        "haiku.Linear);\nconvolution kernels are [*spatial, in, out] (HWIO, as flax.linen.Conv / "
        "haiku.Conv2D).\nFloat64 needs jax.config.update(\"jax_enable_x64\", True).",
        "get_activation(name) -> function; scaled_uniform_orthogonal(key, shape); "
        "zero_bias(key, shape); per_location_normalization(x)"),
    "pytorch": Framework(
        "PyTorch",
        "Weight layout: nn.Linear stores [out, in] and nn.Conv1d/2d/3d store [out, in, "
        "*spatial];\nscaled_uniform_orthogonal_ expects exactly these (transposed=True for "
        "nn.ConvTranspose*,\nwhich store [in, out, *spatial]). Images are NCHW: pass "
        "feature_axis=1 to\nper_location_normalization.",
        "get_activation(name) -> nn.Module; activation_fn(name) -> function; "
        "scaled_uniform_orthogonal_(weight); initialize_(module); "
        "per_location_normalization(x)"),
    "tensorflow": Framework(
        "TensorFlow / Keras",
        "Weight layout: Keras Dense kernels are [in, out]; Conv1D/2D/3D kernels are\n"
        "[*spatial, in, out]; ScaledUniformOrthogonal() expects exactly these. Keras layers "
        "cast\ntheir inputs to the layer dtype (float32 by default): pass dtype=\"float64\" for "
        "float64.",
        "get_activation(name) -> keras Layer; activation_fn(name) -> function; "
        "ScaledUniformOrthogonal(); per_location_normalization(x)"),
}
ALIASES = {"np": "numpy", "torch": "pytorch", "tf": "tensorflow", "keras": "tensorflow"}
TRANSFORM_FORMULA = "output_scale * (phi(input_scale * x + input_shift) + output_shift)"


def framework_name(to: str) -> str:
    """Canonical framework name for ``to`` (accepts np / torch / tf / keras aliases)."""
    key = ALIASES.get(str(to).lower(), str(to).lower())
    if key not in FRAMEWORKS:
        raise ValueError(f"unknown export target {to!r}: choose one of {', '.join(FRAMEWORKS)}")
    return key


def runtime_source(framework: str) -> str:
    """The code of ``kernelshape/runtime/<framework>.py`` below its docstring (read as text:
    the framework need not be installed to export)."""
    text = resources.files("kernelshape.runtime").joinpath(f"{framework}.py").read_text("utf-8")
    body = ast.parse(text).body
    start = body[1].lineno if isinstance(body[0], ast.Expr) else 1
    return "\n".join(text.splitlines()[start - 1:]) + "\n"


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


def base_trees(doc: Mapping[str, Any]) -> dict[str, Node]:
    """Activation name -> expression tree of its base activation, as the engine accepts it
    (the transform's ``negative_slope``, if any, overrides the parameter of that name)."""
    trees = {}
    for name, entry in doc["activations"].items():
        params = dict(entry["params"])
        if entry.get("negative_slope") is not None:
            params["negative_slope"] = entry["negative_slope"]
        try:
            act = activation(entry["activation"], **params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"activation {name!r}: {exc}") from None
        assert act.expression is not None  # names and texts always have a tree
        trees[name] = act.expression
    return trees


def _header(doc: Mapping[str, Any], fw: Framework, formulas: Mapping[str, str]) -> list[str]:
    cert, net = doc["certificate"], doc["network"]
    lines = [
        f'"""Transformed activations for {fw.title}, exported by kernelshape {__version__}.',
        "",
        "Generated file: plain code with no kernelshape import; regenerate it with",
        "`kernelshape export CONSTANTS.json --to FRAMEWORK` instead of editing it.",
        "",
        "Every activation computes",
        f"    phi_hat(x) = {TRANSFORM_FORMULA}",
        "with the constants in CONSTANTS (float64, full repr precision); FORMULAS gives phi.",
        "",
        "API: " + fw.api.replace("; ", ";\n    ") + ".",
        "",
        fw.layout,
        '"""',
        f"# Constants made by kernelshape {_comment(doc['kernelshape_version'])} on "
        f"{_comment(doc['created'])} (format {_comment(doc['format_version'])}).",
        f"# Method: {_comment(doc['method'])}; targets: {_comment(doc['targets'])}",
        f"# Network: spec {_comment(net['spec'])}; hash {_comment(net['hash'])}",
        f"# Certificate: route {_comment(cert['route'])}, tolerance "
        f"{_comment(cert['tolerance'])}; max residual {_comment(doc['max_residual'])}",
        "# Activations:",
    ]
    for name, entry in doc["activations"].items():
        lines.append(f"#   {_comment(name)}: {_comment(formulas[name])}")
        for key in ("input_scale", "input_shift", "output_shift", "output_scale",
                    "negative_slope"):
            if key in entry:
                lines.append(f"#     {key} = {entry[key]!r}")
    return lines


def generate(doc: Mapping[str, Any], to: str) -> str:
    """Source text of the ``to`` module for a validated constants document ``doc``."""
    framework = framework_name(to)
    fw = FRAMEWORKS[framework]
    trees = base_trees(doc)
    names = list(trees)
    formulas = {name: f"phi(x) = {to_source(tree, prefix='')}" for name, tree in trees.items()}
    meta = {
        "KERNELSHAPE_VERSION": doc["kernelshape_version"],
        "EXPORTED_BY": __version__,
        "FORMAT_VERSION": doc["format_version"],
        "METHOD": doc["method"],
        "TARGETS": doc["targets"],
        "NETWORK": {"spec": doc["network"]["spec"], "hash": doc["network"]["hash"]},
        "CERTIFICATE": doc["certificate"],
        "MAX_RESIDUAL": doc["max_residual"],
        "FORMULA": TRANSFORM_FORMULA,
        "FORMULAS": formulas,
        "CONSTANTS": doc["activations"],
        "LOCAL_TARGETS": doc["local_targets"],
    }
    if "eoc" in doc:
        meta["EOC"] = doc["eoc"]
    bases = [f"def _phi_{i}(x):\n    # base activation of {_comment(name)}\n"
             f"    return {to_source(fold(trees[name]))}\n" for i, name in enumerate(names)]
    base_map = "_BASE = {\n" + "".join(f"    {name!r}: _phi_{i},\n"
                                        for i, name in enumerate(names)) + "}\n"
    parts = [
        "\n".join(_header(doc, fw, formulas)) + "\n",
        runtime_source(framework),
        "# --- this file's constants " + "-" * 69 + "\n\n"
        + "\n".join(f"{k} = {_literal(v)}" for k, v in meta.items()) + "\n",
        "\n\n".join(bases),
        base_map,
    ]
    source = "\n\n".join(p.rstrip("\n") + "\n" for p in parts)
    compile(source, f"<kernelshape export to {framework}>", "exec")  # sanity: valid syntax
    return source
