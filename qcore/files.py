"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1 << 24
"""Large payloads are written in pieces of this size, so a failure mid-write stops early."""


def write_chunks(fh: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK_BYTES):
        fh.write(view[start:start + CHUNK_BYTES])


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write `data` (str as UTF-8) to a temporary file beside `path`, fsync it, rename it over `path`.

    On any failure the temporary file is removed and `path` is untouched. The
    directory is fsynced too (where the OS allows), so the rename survives a crash.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write_chunks(fh, payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path
