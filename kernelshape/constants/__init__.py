"""The versioned constants document: its format and validator (``schema``), building, saving
and reading documents (``document``), and all-or-nothing file writes (``files``). Loading
with a recheck of the constants is ``kernelshape.solve.load_constants`` (it needs the solver's
network-to-local derivation)."""

from kernelshape.constants.document import (
    DEFAULT_TOLERANCE,
    build_document,
    entry_transform,
    read_document,
    save_document,
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
    "DEFAULT_TOLERANCE",
    "FORMAT",
    "FORMAT_VERSION",
    "atomic_write",
    "atomic_write_text",
    "build_document",
    "entry_transform",
    "network_hash",
    "read_document",
    "save_document",
    "schema",
    "validate_document",
]
