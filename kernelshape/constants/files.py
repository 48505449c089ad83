"""Writing files all or nothing (constants documents, exported code, training runs)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], None],
                 binary: bool = False) -> Path:
    """Write ``path`` all or nothing: ``write(handle)`` fills a temporary file in the same
    directory, which is fsynced and renamed over ``path`` (usual file mode); on any failure
    or interrupt the previous file is left untouched and no temporary file remains.

    A symbolic link is followed (the file it points to is replaced, the link stays); an
    existing path that is not a regular file (a directory, device or pipe) is refused.
    """
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()
    if target.exists() and not target.is_file():
        raise ValueError(f"cannot write {Path(path)}: it exists and is not a regular file (a "
                         "directory, device or pipe); give the path of a regular file")
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
