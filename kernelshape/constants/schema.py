"""The constants document's format: name, version, JSON Schema (``schema.json`` beside this
module, described in docs/export.md) and the validator that names the offending key."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

FORMAT = "kernelshape.constants"
FORMAT_VERSION = "1.0"
CONDITIONS = ("q_value", "q_slope", "c_value_0", "c_slope_0", "c_slope_1", "c_curv_1")


# --------------------------------------------------------------------------- schema


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("kernelshape.constants").joinpath("schema.json").read_text("utf-8")


def schema() -> dict[str, Any]:
    """Return (a fresh copy of) the JSON Schema of the constants document."""
    return json.loads(_schema_text())


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def key_path(path: tuple[str, ...]) -> str:
    out = ""
    for part in path:
        out += f".{part}" if _IDENT.match(part) else f"[{json.dumps(part)}]"
    return out.lstrip(".") or "the document"


def describe(value: Any) -> str:
    text = json.dumps(value) if _is_plain_json(value) else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    kind = type(value).__name__
    return f"{kind} {text}"


def _is_plain_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


class _Validator:
    """A small JSON Schema validator for the keywords the constants schema uses."""

    def __init__(self, root: Mapping[str, Any], allow_unknown_keys: bool = False):
        self.root = root
        self.allow_unknown_keys = allow_unknown_keys

    def resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise RuntimeError(f"constants schema: unsupported $ref {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    def check(self, value: Any, sch: Mapping[str, Any], path: tuple[str, ...]) -> None:
        where = key_path(path)
        for key in sch:
            if key not in _KEYWORDS and key not in _ANNOTATIONS:
                raise RuntimeError(f"constants schema uses unsupported keyword {key!r}")
        if "$ref" in sch:
            self.check(value, self.resolve(sch["$ref"]), path)
        if "type" in sch:
            types = sch["type"] if isinstance(sch["type"], list) else [sch["type"]]
            if not any(_TYPE_CHECKS[t](value) for t in types):
                raise ValueError(
                    f"{where}: expected {' or '.join(types)}, got {describe(value)}"
                )
        if "const" in sch and value != sch["const"]:
            raise ValueError(f"{where}: must be {sch['const']!r}, got {describe(value)}")
        if "enum" in sch and value not in sch["enum"]:
            allowed = ", ".join(repr(v) for v in sch["enum"])
            raise ValueError(f"{where}: must be one of {allowed}; got {describe(value)}")
        if isinstance(value, str):
            if "pattern" in sch and not re.search(sch["pattern"], value):
                raise ValueError(f"{where}: {value!r} does not match {sch['pattern']!r}")
            if len(value) < sch.get("minLength", 0):
                raise ValueError(f"{where}: must not be empty")
            if "maxLength" in sch and len(value) > sch["maxLength"]:
                raise ValueError(f"{where}: longer than {sch['maxLength']} characters")
        if _TYPE_CHECKS["number"](value):
            if "minimum" in sch and not value >= sch["minimum"]:
                raise ValueError(f"{where}: must be >= {sch['minimum']}, got {value!r}")
            if "exclusiveMinimum" in sch and not value > sch["exclusiveMinimum"]:
                raise ValueError(
                    f"{where}: must be > {sch['exclusiveMinimum']}, got {value!r}"
                )
        if isinstance(value, dict):
            self.check_object(value, sch, path)

    def check_object(self, value: dict, sch: Mapping[str, Any], path: tuple[str, ...]) -> None:
        where = key_path(path)
        for key in sch.get("required", ()):
            if key not in value:
                raise ValueError(f"{where}: missing required key {key!r}")
        if len(value) < sch.get("minProperties", 0):
            raise ValueError(f"{where}: needs at least {sch['minProperties']} entries")
        props = sch.get("properties", {})
        extra = sch.get("additionalProperties", True)
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings, got {key!r}")
            if "propertyNames" in sch:
                try:
                    self.check(key, sch["propertyNames"], path)
                except ValueError as exc:
                    raise ValueError(f"{key_path(path + (key,))}: invalid key: {exc}") from None
            if key in props:
                self.check(item, props[key], path + (key,))
            elif extra is False:
                if not self.allow_unknown_keys:
                    allowed = ", ".join(sorted(props))
                    raise ValueError(
                        f"{key_path(path + (key,))}: unknown key (allowed here: {allowed})"
                    )
            elif isinstance(extra, dict):
                self.check(item, extra, path + (key,))


_KEYWORDS = {
    "$ref", "type", "const", "enum", "pattern", "minLength", "maxLength", "minimum",
    "exclusiveMinimum", "required", "properties", "additionalProperties", "propertyNames",
    "minProperties",
}


# --------------------------------------------------------------------------- validation


def _version_tuple(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def _check_version(doc: Mapping[str, Any]) -> bool:
    """Check format and major version; return True when the minor version is newer."""
    if doc.get("format") != FORMAT:
        raise ValueError(
            f"not a kernelshape constants document: 'format' is {doc.get('format')!r}, "
            f"expected {FORMAT!r}"
        )
    version = doc.get("format_version")
    if not isinstance(version, str) or not re.fullmatch(r"[0-9]+\.[0-9]+", version):
        raise ValueError(
            f"format_version: expected a string like {FORMAT_VERSION!r}, got {version!r}"
        )
    ours = _version_tuple(FORMAT_VERSION)
    theirs = _version_tuple(version)
    if theirs[0] > ours[0]:
        raise ValueError(
            f"constants document has format_version {version}, written by a newer kernelshape "
            f"(document: {doc.get('kernelshape_version', 'unknown version')}); this version "
            f"reads format {ours[0]}.x only: upgrade kernelshape to load it"
        )
    if theirs[0] < ours[0]:
        raise ValueError(f"format_version {version} is older than any supported format")
    return theirs[1] > ours[1]


def _check_finite(value: Any, path: tuple[str, ...]) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key_path(path)}: must be finite, got {value!r}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, path + (str(key),))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, path + (str(i),))


def validate_document(doc: Any) -> None:
    """Raise ``ValueError`` naming the offending key if ``doc`` is not a valid document.

    Checks the format and major version, the JSON Schema, finiteness of every number, and
    cross-references (every name in ``local_targets``/``residuals``/``eoc`` is an activation,
    ``max_residual`` covers the residuals, ``network.hash`` matches ``network.description``).
    """
    if not isinstance(doc, dict):
        raise ValueError(f"a constants document must be a JSON object, got {describe(doc)}")
    newer_minor = _check_version(doc)
    root = schema()
    _Validator(root, allow_unknown_keys=newer_minor).check(doc, root, ())
    _check_finite(doc, ())
    names = set(doc["activations"])
    for section in ("local_targets", "residuals", "eoc"):
        for name in doc.get(section, {}):
            if name not in names:
                raise ValueError(
                    f"{key_path((section, name))}: no such activation in 'activations' "
                    f"(have: {', '.join(sorted(names))})"
                )
    for name, entry in doc["activations"].items():
        if entry["activation"] in ("leaky_relu", "lrelu") and not (
            "negative_slope" in entry or "negative_slope" in entry["params"]
        ):
            raise ValueError(
                f"{key_path(('activations', name))}: leaky_relu needs 'negative_slope' "
                "(in the entry or in its params)"
            )
    largest = max(
        (abs(v) for res in doc["residuals"].values() for v in res.values()), default=0.0
    )
    if doc["max_residual"] < largest:
        raise ValueError(
            f"max_residual: {doc['max_residual']!r} is smaller than the largest recorded "
            f"residual {largest!r}"
        )
    net = doc["network"]
    if net["description"] is not None and net["hash"] is not None:
        expected = network_hash(net["description"])
        if net["hash"] != expected:
            raise ValueError(
                f"network.hash: {net['hash']} does not match network.description "
                f"(expected {expected})"
            )



# --------------------------------------------------------------------------- plain JSON


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def network_hash(description: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON (sorted keys, no spaces) of a description."""
    digest = hashlib.sha256(_canonical_json(jsonable(description, ("network",))).encode())
    return "sha256:" + digest.hexdigest()


def jsonable(value: Any, path: tuple[str, ...]) -> Any:
    """Convert numpy scalars/arrays, tuples and mappings to plain JSON values."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{key_path(path)}: must be finite, got {value!r}")
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, path + (str(k),)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, path + (str(i),)) for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return jsonable(value.tolist(), path)
    raise ValueError(f"{key_path(path)}: cannot store {describe(value)} in a constants document")
