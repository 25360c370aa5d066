"""Atomic file writes: a reader, or a crash, sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path

from .errors import FaceganError, StorageFull

# "The disk is full" in its three forms: no space, over a quota, over a file-size limit (ulimit -f).
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def no_space_error(exc: BaseException, folder, needed: int | None = None) -> None:
    """Raise one clear line if `exc` (or what it wraps) means the disk is full; else return."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            folder = Path(folder)
            try:
                free = f"{shutil.disk_usage(folder if folder.exists() else folder.parent).free / 2**20:,.0f} MiB free"
            except OSError:
                free = "free space unknown"
            need = f"{needed / 2**20:,.0f} MiB needed, " if needed else ""
            raise StorageFull(f"no space left to write in {folder} ({need}{free}): free some space, or "
                               f"write elsewhere (--out for runs, FACEGAN_CACHE for the data cache)") from None
        exc = exc.__cause__ or exc.__context__


def temp_path(path: Path, suffix: str = "") -> Path:
    """The hidden temporary name a write to `path` goes through: per process, so writers never collide.

    `suffix` keeps an extension that a writer insists on (numpy's savez appends .npz otherwise)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", fsync: bool = False, suffix: str = "", needed: int | None = None):
    """Open a temporary file for writing; on success rename it over `path`, on failure delete it.

    With `fsync` the bytes reach the disk before the rename, so a power cut cannot leave an empty
    file under the final name (checkpoints and caches want this; PNGs and plots do not need it).
    Yields the open file, or, with mode=None, the temporary path for writers that take a name.
    A full disk is one clear error naming the folder (and `needed` bytes, when the caller knows)."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a rename would turn a device, FIFO or socket into a file
        raise FaceganError(f"{path} is not a regular file (a folder, device, FIFO or socket): refusing to replace "
                           f"it; write to a file path instead")
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
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
        no_space_error(exc, path.parent, needed)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> Path:
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


_TEMP_NAME = re.compile(r"^\..+\.tmp(\d+)")  # temp_path's names: .NAME.tmpPID[suffix]


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (ours counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OverflowError, ValueError):
        return False
    return True


def remove_dead_temp_files(*folders) -> int:
    """Delete the temporary files (temp_path's .NAME.tmpPID) that a killed writer left in `folders`: never
    valid, never cleaned up otherwise. Files of live writers are kept. Returns how many went."""
    removed = 0
    for folder in folders:
        folder = Path(folder)
        for tmp in folder.glob(".*.tmp*") if folder.is_dir() else ():
            match = _TEMP_NAME.match(tmp.name)
            if match and not pid_alive(int(match.group(1))):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed
