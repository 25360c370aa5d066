"""Atomic file writes: a reader, or a crash, sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def temp_path(path: Path, suffix: str = "") -> Path:
    """The hidden temporary name a write to `path` goes through: per process, so writers never collide.

    `suffix` keeps an extension that a writer insists on (numpy's savez appends .npz otherwise)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", fsync: bool = False, suffix: str = ""):
    """Open a temporary file for writing; on success rename it over `path`, on failure delete it.

    With `fsync` the bytes reach the disk before the rename, so a power cut cannot leave an empty
    file under the final name (checkpoints and caches want this; PNGs and plots do not need it).
    Yields the open file, or, with mode=None, the temporary path for writers that take a name."""
    path = Path(path)
    tmp = temp_path(path, suffix)
    try:
        if mode is None:
            yield tmp
        else:
            with open(tmp, mode) as f:
                yield f
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)
