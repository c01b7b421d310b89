"""Files that grow for ever, kept bounded (docs/operations.md#growth): a file over its cap moves
to ``<name>.1`` (older ones to ``.2`` ... up to ``keep``, the oldest dropped).

Two ways, by who holds the file open: :func:`rotate` renames, for files their writer reopens
(the traces files); :func:`copy_truncate` copies and then empties the file in place, for a log a
child process holds open in append mode (the services' logs, written through their stdout), which
goes on writing at the new end. A line written between the copy and the truncation can be lost:
the price of rotating a file one does not own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def _shift(path: Path, keep: int) -> None:
    rotated(path, keep).unlink(missing_ok=True)
    for index in range(keep - 1, 0, -1):
        older = rotated(path, index)
        if older.exists():
            older.replace(rotated(path, index + 1))


def _over(path: Path, max_bytes: int) -> bool:
    try:
        return path.stat().st_size > max_bytes
    except FileNotFoundError:
        return False


def rotate(path: Path, max_bytes: int, keep: int) -> bool:
    """Rename ``path`` to ``path.1`` when it is over ``max_bytes``; True when it did."""
    if keep < 1 or not _over(path, max_bytes):
        return False
    _shift(path, keep)
    path.replace(rotated(path, 1))
    return True


def copy_truncate(path: Path, max_bytes: int, keep: int) -> bool:
    """Copy ``path`` to ``path.1`` and empty it in place when it is over ``max_bytes``."""
    if keep < 1 or not _over(path, max_bytes):
        return False
    _shift(path, keep)
    shutil.copyfile(path, rotated(path, 1))
    os.truncate(path, 0)
    return True
