"""The versioned constants document: its format and validator (``schema``), building, saving,
loading and verifying documents (``document``), and all-or-nothing file writes (``files``)."""

from kernelshape.constants.document import (
    DEFAULT_CHECK_TOLERANCE,
    DEFAULT_TOLERANCE,
    build_document,
    entry_transform,
    load_constants,
    read_document,
    save_document,
    verify_document,
)
from kernelshape.constants.files import atomic_write, atomic_write_text
from kernelshape.constants.schema import (
    CONDITIONS,
    FORMAT,
    FORMAT_VERSION,
    network_hash,
    schema,
    validate_document,
)

__all__ = [
    "CONDITIONS",
    "DEFAULT_CHECK_TOLERANCE",
    "DEFAULT_TOLERANCE",
    "FORMAT",
    "FORMAT_VERSION",
    "atomic_write",
    "atomic_write_text",
    "build_document",
    "entry_transform",
    "load_constants",
    "network_hash",
    "read_document",
    "save_document",
    "schema",
    "validate_document",
    "verify_document",
]
