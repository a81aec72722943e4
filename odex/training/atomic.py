"""Writes that never lose the file they replace (`.tmp`, fsync, `os.replace`), appends cut back on
failure, and a full disk as `DiskFull`, one line naming the folder and the size. The packages for
this (atomicwrites: archived; safer) add nothing these lines do not and would not name the folder
and size on ENOSPC. Design notes: docs/design-notes.md, "odex/training/atomic.py".
"""
from __future__ import annotations

import errno
import os
import shutil
from contextlib import suppress
from pathlib import Path

from odex.errors import DiskFull

FULL = (errno.ENOSPC, errno.EDQUOT)


def size_text(n: int) -> str:
    """Bytes for a person: 612 B, 64 KB, 3.1 MB, 2.0 GB (powers of 1024)."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n} B"


def free_bytes(folder: str | Path) -> int | None:
    """Free space for an unprivileged writer on the disk of `folder` (or of its nearest existing
    parent); None when it cannot be told."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free        # statvfs's f_bavail: what a user may write
    except OSError:
        return None


def disk_full(folder: str | Path, needed: int, what: str = "") -> DiskFull:
    free = free_bytes(folder)
    have = f", {size_text(free)} free" if free is not None else ""
    return DiskFull(f"{folder}: not enough free disk space{' for ' + what if what else ''} (needs about "
                    f"{size_text(needed)}{have}): free some space or use another folder; nothing in it was "
                    "changed")


def require_space(folder: str | Path, needed: int, what: str = "") -> None:
    """Raise `DiskFull` when the disk of `folder` has less than `needed` bytes free."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise disk_full(folder, needed, what)


def _write_all(f, data: bytes) -> None:
    """Every byte through an unbuffered file (a raw write may take part of them), so that a full
    disk raises here and not later, when a buffer is flushed on close."""
    view = memoryview(data)
    while view:
        view = view[f.write(view):]


def write_bytes(path: str | Path, data: bytes, before_replace=None) -> None:
    """Replace `path` by `data` atomically: temporary file, fsync, rename; on any failure the old
    file stays and the temporary one is removed (a full disk raises `DiskFull`). `before_replace`
    runs once the new bytes are safely on disk, just before the rename (a checksum file's update:
    a failure there also leaves the old file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb", buffering=0) as f:
            _write_all(f, data)
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in FULL:
            raise disk_full(path.parent, len(data), path.name) from None
        raise


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def append_text(path: str | Path, text: str) -> None:
    """Append `text` (whole lines) to `path`; a failed append is cut back, so the file keeps exactly
    its earlier lines (a full disk raises `DiskFull`)."""
    path = Path(path)
    data = text.encode("utf-8")
    with open(path, "ab", buffering=0) as f:
        start = f.tell()
        try:
            _write_all(f, data)
        except OSError as e:
            with suppress(OSError):
                f.truncate(start)
            if e.errno in FULL:
                raise disk_full(path.parent, len(data), path.name) from None
            raise


def makedirs(folder: str | Path) -> None:
    """mkdir -p, with a full disk as `DiskFull`."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in FULL:
            raise disk_full(Path(folder).parent, 4096, Path(folder).name) from None
        raise
