"""The one atomic-write helper.

A file is written under a unique temporary name in the *same* directory, flushed and fsynced,
renamed over the final name, and the directory is fsynced so the rename itself is durable. A
reader therefore sees either the old file or the complete new one, never a torn one, even after
SIGKILL or a node crash. Temporary names start with ``.tmp-`` so readers and cleaners can skip
them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".tmp-"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Fsync a directory so that renames and creations inside it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """Return a unique temporary sibling of ``path`` (same directory, so rename is atomic)."""
    return path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path`` atomically.

    Use this for libraries that open files themselves (h5py, pyarrow). On an exception the
    temporary file is removed and ``path`` is untouched.

    Parameters
    ----------
    path
        Final destination.
    durable
        Fsync the file and its directory (default). Turn off only for scratch data.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(final.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync directory)."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(payload)
    return Path(path)


def create_exclusive(path: str | os.PathLike[str], data: bytes | str) -> bool:
    """Create ``path`` with ``data`` only if it does not exist (O_EXCL); return whether it did.

    The content is written to a temporary file first and then hard-linked to ``path``: ``link``
    fails if the target exists, so creation is exclusive *and* the file is never seen half
    written. Used for attempt records, where two launches must not both win.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    payload = data.encode() if isinstance(data, str) else data
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    fsync_dir(final.parent)
    return True
