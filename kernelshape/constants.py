"""The versioned constants document: build, validate, save atomically, load and verify.

A constants document is a JSON object (schema: ``constants_schema.json`` beside this module,
described in ``docs/export.md``) holding the per-activation transform constants found by a
shaping method, the targets they satisfy, residuals from an independent certificate and
enough provenance (package version, creation time, network spec/hash) to trust them later.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import IO, Any

from kernelshape.engine.activations import activation
from kernelshape.engine.maps import local_summary
from kernelshape.engine.transform import TRANSFORM_KEYS, Transform

FORMAT = "kernelshape.constants"
FORMAT_VERSION = "1.0"
CONDITIONS = ("q_value", "q_slope", "c_value_0", "c_slope_0", "c_slope_1", "c_curv_1")
DEFAULT_TOLERANCE = 1e-9
DEFAULT_CHECK_TOLERANCE = 1e-9

Evaluator = Callable[[str, Mapping[str, Any]], Mapping[str, float]]

__all__ = [
    "CONDITIONS",
    "FORMAT",
    "FORMAT_VERSION",
    "atomic_write",
    "atomic_write_text",
    "build_document",
    "load_constants",
    "network_hash",
    "save_document",
    "schema",
    "validate_document",
    "verify_document",
]


# --------------------------------------------------------------------------- schema


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("kernelshape").joinpath("constants_schema.json").read_text("utf-8")


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


def _where(path: tuple[str, ...]) -> str:
    out = ""
    for part in path:
        out += f".{part}" if _IDENT.match(part) else f"[{json.dumps(part)}]"
    return out.lstrip(".") or "the document"


def _describe(value: Any) -> str:
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
        where = _where(path)
        for key in sch:
            if key not in _KEYWORDS and key not in _ANNOTATIONS:
                raise RuntimeError(f"constants schema uses unsupported keyword {key!r}")
        if "$ref" in sch:
            self.check(value, self.resolve(sch["$ref"]), path)
        if "type" in sch:
            types = sch["type"] if isinstance(sch["type"], list) else [sch["type"]]
            if not any(_TYPE_CHECKS[t](value) for t in types):
                raise ValueError(
                    f"{where}: expected {' or '.join(types)}, got {_describe(value)}"
                )
        if "const" in sch and value != sch["const"]:
            raise ValueError(f"{where}: must be {sch['const']!r}, got {_describe(value)}")
        if "enum" in sch and value not in sch["enum"]:
            allowed = ", ".join(repr(v) for v in sch["enum"])
            raise ValueError(f"{where}: must be one of {allowed}; got {_describe(value)}")
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
        where = _where(path)
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
                    raise ValueError(f"{_where(path + (key,))}: invalid key: {exc}") from None
            if key in props:
                self.check(item, props[key], path + (key,))
            elif extra is False:
                if not self.allow_unknown_keys:
                    allowed = ", ".join(sorted(props))
                    raise ValueError(
                        f"{_where(path + (key,))}: unknown key (allowed here: {allowed})"
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
        raise ValueError(f"{_where(path)}: must be finite, got {value!r}")
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
        raise ValueError(f"a constants document must be a JSON object, got {_describe(doc)}")
    newer_minor = _check_version(doc)
    root = schema()
    _Validator(root, allow_unknown_keys=newer_minor).check(doc, root, ())
    _check_finite(doc, ())
    names = set(doc["activations"])
    for section in ("local_targets", "residuals", "eoc"):
        for name in doc.get(section, {}):
            if name not in names:
                raise ValueError(
                    f"{_where((section, name))}: no such activation in 'activations' "
                    f"(have: {', '.join(sorted(names))})"
                )
    for name, entry in doc["activations"].items():
        if entry["activation"] in ("leaky_relu", "lrelu") and not (
            "negative_slope" in entry or "negative_slope" in entry["params"]
        ):
            raise ValueError(
                f"{_where(('activations', name))}: leaky_relu needs 'negative_slope' "
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


# --------------------------------------------------------------------------- building


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def network_hash(description: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON (sorted keys, no spaces) of a description."""
    digest = hashlib.sha256(_canonical_json(_jsonable(description, ("network",))).encode())
    return "sha256:" + digest.hexdigest()


def _jsonable(value: Any, path: tuple[str, ...]) -> Any:
    """Convert numpy scalars/arrays, tuples and mappings to plain JSON values."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{_where(path)}: must be finite, got {value!r}")
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, path + (str(k),)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, path + (str(i),)) for i, v in enumerate(value)]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _jsonable(value.tolist(), path)
    raise ValueError(f"{_where(path)}: cannot store {_describe(value)} in a constants document")


def _number(value: Any, path: tuple[str, ...]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(
        value, "__float__"
    ):
        raise ValueError(f"{_where(path)}: expected a number, got {_describe(value)}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{_where(path)}: must be finite, got {out!r}")
    return out


def _activation_entry(name: str, entry: Any) -> dict[str, Any]:
    path = ("activations", name)
    if not isinstance(entry, Mapping):
        for attr in ("as_dict", "to_dict"):
            if hasattr(entry, attr):
                entry = getattr(entry, attr)()
                break
        else:
            raise ValueError(f"{_where(path)}: expected a mapping, got {_describe(entry)}")
    if isinstance(entry.get("transform"), Mapping):  # Activation.to_dict() layout
        entry = {**{k: v for k, v in entry.items() if k != "transform"}, **entry["transform"]}
    out: dict[str, Any] = {
        "activation": str(entry.get("activation", name)),
        "params": _jsonable(dict(entry.get("params", {})), path + ("params",)),
    }
    identity = Transform().as_dict()
    for key in TRANSFORM_KEYS:
        value = entry.get(key, identity.get(key))
        if value is not None:
            out[key] = _number(value, path + (key,))
    unknown = set(entry) - set(out) - {"negative_slope"}
    if unknown:
        raise ValueError(f"{_where(path)}: unknown keys {sorted(unknown)}")
    return out


def _number_table(table: Mapping[str, Any] | None, section: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, conds in (table or {}).items():
        out[str(name)] = {
            str(k): _number(v, (section, str(name), str(k))) for k, v in dict(conds).items()
        }
    return out


def _network_block(network: Any) -> dict[str, Any]:
    if network is None:
        return {"spec": None, "hash": None, "description": None}
    if isinstance(network, str):
        return {"spec": network, "hash": None, "description": None}
    if not isinstance(network, Mapping):
        if not hasattr(network, "to_dict"):
            raise ValueError(
                "network: expected None, a SPEC string, a mapping with spec/hash/description "
                f"or an object with to_dict(); got {_describe(network)}"
            )
        spec = getattr(network, "spec", None)
        network = {"spec": spec if isinstance(spec, str) else None,
                   "description": network.to_dict()}
    unknown = set(network) - {"spec", "hash", "description"}
    if unknown:
        raise ValueError(f"network: unknown keys {sorted(unknown)}")
    description = network.get("description")
    if description is not None:
        description = _jsonable(description, ("network", "description"))
    digest = network.get("hash")
    if digest is None and description is not None:
        digest = network_hash(description)
    return {"spec": network.get("spec"), "hash": digest, "description": description}


def build_document(
    method: str,
    targets: Mapping[str, Any],
    activations: Mapping[str, Any],
    local_targets: Mapping[str, Mapping[str, float]],
    residuals: Mapping[str, Mapping[str, float]],
    network: Any = None,
    certificate: Mapping[str, Any] | None = None,
    eoc: Mapping[str, Mapping[str, float]] | None = None,
    *,
    created: str | None = None,
) -> dict[str, Any]:
    """Build and validate a format-1.0 constants document from plain data.

    ``activations`` maps a name to a mapping holding the transform constants (flat, or
    nested under ``transform`` as in ``Activation.to_dict()``), or to an object with
    ``as_dict()`` / ``to_dict()`` (a ``Transform`` or an ``Activation``); ``activation``
    (base activation name or expression text, default: the name) and ``params`` are
    optional. ``network`` is None, a SPEC string, a mapping
    with ``spec``/``hash``/``description`` or an object with ``to_dict()``; the hash is
    computed from the description when not given. ``certificate`` holds ``route`` and
    ``tolerance`` (and optionally ``check_tolerance``, the tolerance used when
    ``load_constants`` re-evaluates the local conditions).
    """
    from kernelshape import __version__

    res = _number_table(residuals, "residuals")
    max_residual = max((abs(v) for r in res.values() for v in r.values()), default=0.0)
    cert = dict(certificate) if certificate is not None else {
        "route": "unrecorded", "tolerance": max(DEFAULT_TOLERANCE, max_residual)}
    cert = _jsonable(cert, ("certificate",))
    if "tolerance" in cert and "check_tolerance" not in cert:
        tol = _number(cert["tolerance"], ("certificate", "tolerance"))
        cert["check_tolerance"] = max(DEFAULT_CHECK_TOLERANCE, 10.0 * tol)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kernelshape_version": __version__,
        "created": created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "method": method,
        "targets": _jsonable(dict(targets), ("targets",)),
        "network": _network_block(network),
        "activations": {str(k): _activation_entry(str(k), v) for k, v in activations.items()},
        "local_targets": _number_table(local_targets, "local_targets"),
        "residuals": res,
        "max_residual": max_residual,
        "certificate": cert,
    }
    if eoc is not None:
        doc["eoc"] = _number_table(eoc, "eoc")
    validate_document(doc)
    return doc


# --------------------------------------------------------------------------- save / load


def save_document(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Validate ``doc`` and write it to ``path`` atomically (temp file + ``os.replace``).

    On any failure the previous file at ``path`` (if any) is left untouched and no
    temporary file remains.
    """
    doc = dict(doc)
    validate_document(doc)
    text = json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], None],
                 binary: bool = False) -> Path:
    """Write ``path`` all or nothing: ``write(handle)`` fills a temporary file in the same
    directory, which is fsynced and renamed over ``path`` (usual file mode); on any failure
    or interrupt the previous file is left untouched and no temporary file remains."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise ValueError(f"cannot write {target}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else
                                                       {"encoding": "utf-8"})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; use the usual file mode
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(text))


def _reject_constant(token: str) -> float:
    raise ValueError(f"non-finite number {token} (JSON allows finite numbers only)")


def read_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a document without re-evaluating its constants."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read constants file: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: corrupted constants file: not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{p}: corrupted constants file: not valid JSON ({exc.msg} at line {exc.lineno}, "
            f"column {exc.colno})"
        ) from None
    except ValueError as exc:
        raise ValueError(f"{p}: corrupted constants file: {exc}") from None
    try:
        validate_document(doc)
    except ValueError as exc:
        raise ValueError(f"{p}: invalid constants document: {exc}") from None
    return doc


def load_constants(path: str | os.PathLike[str], verify: bool = True) -> dict[str, Any]:
    """Load a constants document, validate it, and (``verify=True``) re-check its constants.

    Verification re-evaluates the local conditions of every activation in
    ``local_targets`` with ``kernelshape.engine.maps.local_summary`` and compares them with the
    recorded targets within ``certificate.check_tolerance``.
    """
    doc = read_document(path)
    if verify:
        try:
            verify_document(doc)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return doc


# --------------------------------------------------------------------------- verification


def _default_evaluate(name: str, entry: Mapping[str, Any]) -> Mapping[str, float]:
    act = activation(entry["activation"], **entry["params"])
    return local_summary(act.transformed(entry_transform(entry)))


def entry_transform(entry: Mapping[str, Any]) -> Transform:
    """The ``Transform`` of a document's activation entry."""
    return Transform(**{k: entry[k] for k in TRANSFORM_KEYS if entry.get(k) is not None})


def verify_document(
    doc: Mapping[str, Any], evaluate: Evaluator | None = None
) -> dict[str, dict[str, float]]:
    """Re-evaluate every recorded local condition; return the residuals or raise ValueError.

    ``evaluate(name, entry)`` returns the ``local_summary`` dict of the transformed
    activation described by ``entry`` (default: ``kernelshape.engine.maps.local_summary``).
    A condition passes when ``|value - target| <= check_tolerance * max(1, |target|)``.
    """
    evaluate = evaluate or _default_evaluate
    cert = doc["certificate"]
    tol = float(cert.get("check_tolerance", DEFAULT_CHECK_TOLERANCE))
    if doc["max_residual"] > cert["tolerance"]:
        raise ValueError(
            f"recorded max_residual {doc['max_residual']!r} exceeds the certificate tolerance "
            f"{cert['tolerance']!r}: these constants did not pass their own certificate"
        )
    found: dict[str, dict[str, float]] = {}
    failures = []
    for name, targets in doc["local_targets"].items():
        if not targets:
            continue
        summary = evaluate(name, doc["activations"][name])
        found[name] = {}
        for cond, target in targets.items():
            value = float(summary[cond])
            residual = abs(value - target)
            found[name][cond] = residual
            if not residual <= tol * max(1.0, abs(target)):
                failures.append(
                    f"{name}.{cond} = {value!r}, recorded target {target!r} "
                    f"(|difference| {residual:.3g} > tolerance {tol:.3g})"
                )
    if failures:
        raise ValueError(
            "constants fail their recorded residual check: " + "; ".join(failures)
        )
    return found
