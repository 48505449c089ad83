"""Exporters: constants document -> dependency-free numpy / JAX / PyTorch / TensorFlow code.

``export(document_or_path, to=...)`` returns the source text of a module that defines
``CONSTANTS``, ``get_activation(name)``, the framework's scaled-uniform-orthogonal (Delta)
initializer and ``per_location_normalization`` (the framework's runtime module,
``kernelshape/runtime/``, copied in); ``export_to_file`` writes it atomically.
See ``docs/export.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kernelshape.constants import atomic_write_text
from kernelshape.export.generate import FRAMEWORKS, framework_name, generate
from kernelshape.solve.recheck import checked, load_constants

__all__ = ["FRAMEWORKS", "export", "export_to_file", "framework_name"]


def _document(document_or_path: Any, verify: bool) -> dict[str, Any]:
    if isinstance(document_or_path, (str, os.PathLike)):
        return load_constants(document_or_path, verify=verify)
    doc = document_or_path
    if not isinstance(doc, Mapping) and hasattr(doc, "to_document"):
        doc = doc.to_document()
    if not isinstance(doc, Mapping):
        raise ValueError(
            "export needs a constants document (dict), a path to one, or an object with "
            f"to_document(); got {type(document_or_path).__name__}"
        )
    return checked(doc, verify)


def export(document_or_path: Any, to: str = "numpy", *, verify: bool = True) -> str:
    """Source text of a ``to`` module (numpy, jax, pytorch or tensorflow) for a document.

    ``document_or_path``: a constants document (validated), a path (loaded with
    ``load_constants(path, verify=verify)``) or an object with ``to_document()``.
    """
    framework = framework_name(to)
    return generate(_document(document_or_path, verify), framework)


def export_to_file(
    document_or_path: Any,
    path: str | os.PathLike[str],
    to: str = "numpy",
    *,
    verify: bool = True,
) -> Path:
    """Write ``export(document_or_path, to)`` to ``path`` atomically; return the path."""
    return atomic_write_text(path, export(document_or_path, to, verify=verify))
