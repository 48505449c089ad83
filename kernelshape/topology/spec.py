"""SPEC strings: ``preset:key=value,...`` or the path of a saved network JSON.

Examples: ``"mlp:depth=100,activation=tanh"``,
``"resnet:depth=101,shortcut_weight=0.6,version=2,activation=softplus"``,
``"convnet:depth=20,input_shape=32x32x3"``, ``"runs/net.json"``.
Option values are typed by the preset's signature; tuples are written ``32x32x3``. Commas
inside parentheses belong to the value (activation expressions such as ``max(x,0)``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from kernelshape.topology.nets import PRESETS
from kernelshape.topology.network import Network, load_network


def parse_spec(spec: str) -> Network:
    """The network a SPEC string describes; ValueError says what is wrong and what is allowed."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a network SPEC must be a nonempty string, got {spec!r}; "
                         f"e.g. 'mlp:depth=100,activation=tanh' or a path to a network JSON")
    spec = spec.strip()
    if spec.endswith(".json") or os.path.isfile(spec):
        if not os.path.isfile(spec):
            raise ValueError(f"network file {spec!r} does not exist")
        return load_network(spec)
    name, _, rest = spec.partition(":")
    preset = PRESETS.get(name.strip())
    if preset is None:
        raise ValueError(f"unknown network preset {name.strip()!r} in SPEC {spec!r}; presets: "
                         f"{', '.join(PRESETS)} (or give the path of a saved network .json)")
    options = _parse_options(rest, preset, name.strip())
    return preset(**options)


def preset_options(preset: Callable) -> dict[str, inspect.Parameter]:
    """Option name -> parameter of a preset function (what its SPEC accepts)."""
    return dict(inspect.signature(preset).parameters)


def split_options(text: str) -> list[str]:
    """Split SPEC options ``k=v,k=v`` at commas outside parentheses (activation expressions
    such as ``max(x,0)`` keep theirs)."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def with_option(spec: str, key: str, value: Any) -> str:
    """``spec`` with preset option ``key`` set to ``value`` (added when missing).

    >>> with_option("mlp:depth=10,activation=tanh", "depth", 50)
    'mlp:depth=50,activation=tanh'
    """
    if spec.strip().endswith(".json") or os.path.isfile(spec):
        raise ValueError(f"cannot change {key!r} of the saved network {spec!r}; give a preset "
                         "SPEC such as mlp:depth=20,activation=tanh")
    name, _, rest = spec.strip().partition(":")
    items = split_options(rest)
    keys = [item.partition("=")[0].strip() for item in items]
    if key in keys:
        items[keys.index(key)] = f"{key}={value}"
    else:
        items.append(f"{key}={value}")
    return f"{name}:{','.join(items)}"


def _parse_options(text: str, preset: Callable, name: str) -> dict[str, Any]:
    params = preset_options(preset)
    allowed = ", ".join(f"{k} ({_type_text(p)})" for k, p in params.items())
    options: dict[str, Any] = {}
    for item in split_options(text):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"SPEC option {item!r} of {name!r} is not key=value; "
                             f"options: {allowed}")
        if key not in params:
            raise ValueError(f"{name!r} has no option {key!r}; options: {allowed}")
        if key in options:
            raise ValueError(f"option {key!r} is given twice in the {name!r} SPEC")
        options[key] = _convert(value, params[key], key)
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty
               and k not in options]
    if missing:
        raise ValueError(f"{name!r} needs option(s) {', '.join(missing)}; options: {allowed}")
    return options


def _type_text(param: inspect.Parameter) -> str:
    kind = _kind(param)
    default = "" if param.default is inspect.Parameter.empty else f", default {param.default}"
    return {"int": "integer", "float": "number", "tuple": "e.g. 32x32x3",
            "str": "name"}[kind] + default


def _kind(param: inspect.Parameter) -> str:
    annotation = str(param.annotation)
    for kind in ("int", "float", "tuple"):
        if annotation.startswith(kind):
            return kind
    return "str"


def _convert(value: str, param: inspect.Parameter, key: str) -> Any:
    kind = _kind(param)
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "tuple":
            return tuple(int(v) for v in value.lower().split("x"))
    except ValueError:
        raise ValueError(f"option {key}={value!r}: expected {_type_text(param)}") from None
    return value
