"""A checkpoint's SHA-256 in `<file>.sha256` (the `sha256sum` format), checked before a checkpoint is
read (torch.load never checks its zip CRCs). Torch-free. Design notes: docs/design-notes.md, "odex/training/checksum.py".
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

from odex.errors import ChangedFile
from odex.training import atomic


def sidecar(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def listed(path: str | Path) -> list[str]:
    """The hashes the checksum file of `path` accepts (none when there is no such file)."""
    side = sidecar(path)
    if not side.is_file():
        return []
    return [line.split()[0] for line in side.read_text().splitlines() if line.strip()]


def _lines(hashes: list[str], name: str) -> str:
    return "".join(f"{h}  {name}\n" for h in dict.fromkeys(hashes))


def expect(path: str | Path, new: str) -> None:
    """Before `path` is replaced by a file whose hash is `new`: accept the current file and the new."""
    path = Path(path)
    old = listed(path) if path.exists() else []
    atomic.write_text(sidecar(path), _lines([*old[-2:], new], path.name))


def settle(path: str | Path, new: str) -> None:
    """After the replacement: only the new file's hash."""
    atomic.write_text(sidecar(Path(path)), _lines([new], Path(path).name))


def verify(path: str | Path, key: str | None = None) -> None:
    """Raise `ChangedFile` (one line naming the file) when `path`'s bytes are not the ones odex wrote.
    `key` (e.g. ckpt_path) starts the message as `key=path` for a command-line argument."""
    path = Path(path)
    name = f"{key}={path}" if key else str(path)
    hashes = listed(path)
    if hashes:
        if file_digest(path) not in hashes:
            raise ChangedFile(f"{name}: its bytes changed since odex wrote it (its SHA-256 is not the one in "
                              f"{sidecar(path).name}): the file is damaged or was edited")
        return
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ChangedFile(f"{name}: not a complete checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:80]}): "
                          "the file is truncated or damaged") from None
    except Exception as e:  # noqa: BLE001 -- zipfile's other errors on a damaged header (struct, zlib)
        raise ChangedFile(f"{name}: not a readable checkpoint ({type(e).__name__}): the file is damaged") from None
    if bad is not None:
        raise ChangedFile(f"{name}: its bytes changed (the CRC of its record {bad} does not match): the file is "
                          "damaged or was edited")
