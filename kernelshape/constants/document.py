"""Build, save, load and verify constants documents.

A document holds the per-activation transform constants found by a shaping method, the targets
they satisfy, residuals from an independent certificate and enough provenance (package
version, creation time, network spec/hash) to trust them later.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kernelshape import __version__
from kernelshape.constants.files import atomic_write_text
from kernelshape.constants.schema import (
    FORMAT,
    FORMAT_VERSION,
    describe,
    jsonable,
    key_path,
    network_hash,
    validate_document,
)
from kernelshape.engine.transform import TRANSFORM_KEYS, Transform

DEFAULT_TOLERANCE = 1e-9


# --------------------------------------------------------------------------- building


def _number(value: Any, path: tuple[str, ...]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(
        value, "__float__"
    ):
        raise ValueError(f"{key_path(path)}: expected a number, got {describe(value)}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{key_path(path)}: must be finite, got {out!r}")
    return out


def _activation_entry(name: str, entry: Any) -> dict[str, Any]:
    path = ("activations", name)
    if not isinstance(entry, Mapping):
        for attr in ("as_dict", "to_dict"):
            if hasattr(entry, attr):
                entry = getattr(entry, attr)()
                break
        else:
            raise ValueError(f"{key_path(path)}: expected a mapping, got {describe(entry)}")
    if isinstance(entry.get("transform"), Mapping):  # Activation.to_dict() layout
        entry = {**{k: v for k, v in entry.items() if k != "transform"}, **entry["transform"]}
    out: dict[str, Any] = {
        "activation": str(entry.get("activation", name)),
        "params": jsonable(dict(entry.get("params", {})), path + ("params",)),
    }
    identity = Transform().as_dict()
    for key in TRANSFORM_KEYS:
        value = entry.get(key, identity.get(key))
        if value is not None:
            out[key] = _number(value, path + (key,))
    unknown = set(entry) - set(out) - {"negative_slope"}
    if unknown:
        raise ValueError(f"{key_path(path)}: unknown keys {sorted(unknown)}")
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
                f"or an object with to_dict(); got {describe(network)}"
            )
        spec = getattr(network, "spec", None)
        network = {"spec": spec if isinstance(spec, str) else None,
                   "description": network.to_dict()}
    unknown = set(network) - {"spec", "hash", "description"}
    if unknown:
        raise ValueError(f"network: unknown keys {sorted(unknown)}")
    description = network.get("description")
    if description is not None:
        description = jsonable(description, ("network", "description"))
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
    ``tolerance``. (A document is trusted only after ``kernelshape.solve.recheck`` has
    recomputed it from its network and method.)
    """
    res = _number_table(residuals, "residuals")
    max_residual = max((abs(v) for r in res.values() for v in r.values()), default=0.0)
    cert = dict(certificate) if certificate is not None else {
        "route": "unrecorded", "tolerance": max(DEFAULT_TOLERANCE, max_residual)}
    cert = jsonable(cert, ("certificate",))
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kernelshape_version": __version__,
        "created": created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "method": method,
        "targets": jsonable(dict(targets), ("targets",)),
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
    except RecursionError:
        raise ValueError(f"{p}: corrupted constants file: nested too deeply") from None
    try:
        validate_document(doc)
    except ValueError as exc:
        raise ValueError(f"{p}: invalid constants document: {exc}") from None
    return doc


def entry_transform(entry: Mapping[str, Any]) -> Transform:
    """The ``Transform`` of a document's activation entry."""
    return Transform(**{k: entry[k] for k in TRANSFORM_KEYS if entry.get(k) is not None})
