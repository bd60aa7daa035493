"""The one atomic-write helper.

A file is written under a unique temporary name in the *same* directory, flushed and fsynced,
renamed over the final name, and the directory is fsynced so the rename itself is durable. A
reader therefore sees either the old file or the complete new one, never a torn one, even after
SIGKILL or a node crash. Temporary names start with ``.tmp-`` so readers and cleaners can skip
them.

Outputs written per index may be finished *behind* the caller: :func:`atomic_path` with
``defer=True`` hands the temporary to the process's active write-behind publisher (see
:mod:`hpc_curator.writebehind`, which the rank loop activates), which fsyncs and renames it on
a background thread while the next index computes; the rank loop waits for it before it
commits the index. Without an active publisher ``defer`` changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

TMP_PREFIX = ".tmp-"


class Deferral(Protocol):
    """Where :func:`atomic_path` sends a finished temporary when ``defer=True``."""

    def submit(self, tmp: Path, final: Path) -> None:
        """Fsync ``tmp``, rename it to ``final`` and fsync the directory, later."""

    def sync(self, path: Path) -> None:
        """Fsync ``path`` (written in place) and its directory, later."""


_local = threading.local()


def set_deferral(target: Deferral | None) -> Deferral | None:
    """Make ``target`` this thread's publisher for ``defer=True`` writes; return the previous."""
    previous = _deferral()
    _local.target = target
    return previous


def _deferral() -> Deferral | None:
    """This thread's write-behind publisher, if one is active."""
    return getattr(_local, "target", None)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Fsync a directory so that renames and creations inside it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """Return a unique temporary sibling of ``path`` (same directory, so rename is atomic).

    The name keeps ``path``'s suffix (``.tmp-<hex>.stats.parquet``): libraries that choose a
    format from the suffix, or add their own when it is missing, write what they would write
    to ``path``.
    """
    return path.with_name(f"{TMP_PREFIX}{os.urandom(6).hex()}.{path.name}")


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Fsync one file's data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Fsync every file and directory below ``root`` (a directory output: a Zarr store)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fsync_file(os.path.join(dirpath, name))
        fsync_dir(dirpath)


def remove(path: Path) -> None:
    """Remove a file or a directory tree; nothing if it is gone."""
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def remove_stale_temps(directory: Path, name: str | None = None) -> int:
    """Remove temporary files and directories a crashed writer left in ``directory``.

    With ``name``, only the temporaries of that one final name (:func:`temp_name`): for a
    directory other programs may write to as well. Call it only when no writer of ours can be
    active there (at the start of an attempt). Returns how many entries were removed.
    """
    if not directory.is_dir():
        return 0
    stale = [
        p
        for p in directory.iterdir()
        if p.name.startswith(TMP_PREFIX)
        and (name is None or p.name[len(TMP_PREFIX) + 13 :] == name)
    ]
    for p in stale:
        remove(p)
    return len(stale)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, durable: bool = True, defer: bool = False
) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path`` atomically.

    Use this for libraries that open files themselves (h5py, pyarrow, zarr). The writer may
    create a file or a directory (a Zarr store) at the temporary path; a directory is fsynced
    file by file and renamed into place as a whole. Replacing an existing directory takes two
    renames (the old one is moved aside first, then deleted): a crash between them leaves
    ``path`` missing and the old tree under a ``.tmp-`` name, never a mix of the two. On an
    exception the temporary file or directory is removed and ``path`` is untouched.

    Parameters
    ----------
    path
        Final destination.
    durable
        Fsync the file and its directory (default). Turn off only for scratch data.
    defer
        When a write-behind publisher is active in this thread (inside the rank loop), return
        as soon as the temporary is written and let the publisher fsync and rename it; the
        rank loop commits the index only after that succeeded, so ``path`` may appear a
        little later but never torn. For a sink's per-index outputs that nothing reads back
        within the same index.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    target = _deferral() if defer and durable else None
    try:
        yield tmp
        if target is not None:
            target.submit(tmp, final)
            return
        finish(tmp, final, durable=durable)
    except BaseException:
        remove(tmp)
        raise
    if durable:
        fsync_dir(final.parent)


def make_durable(path: str | os.PathLike[str], *, defer: bool = False) -> None:
    """Fsync a file written in place and its directory (a Zarr chunk rewritten by zarr).

    ``defer``: as for :func:`atomic_path`, hand it to this thread's write-behind publisher
    when one is active (the rank loop waits for it before committing the index).
    """
    target = _deferral() if defer else None
    if target is not None:
        target.sync(Path(path))
        return
    fsync_file(path)
    fsync_dir(Path(path).parent)


def finish(tmp: Path, final: Path, *, durable: bool = True) -> None:
    """Fsync ``tmp`` (a file or a directory tree) and rename it to ``final``.

    The directory is not fsynced here: the caller does that, once per directory.
    """
    if durable and tmp.is_dir():
        _fsync_tree(tmp)
    elif durable:
        fsync_file(tmp)
    if final.is_dir() or (tmp.is_dir() and final.exists()):
        aside = temp_name(final)  # os.replace cannot replace a non-empty directory
        os.replace(final, aside)
        os.replace(tmp, final)
        remove(aside)
    else:
        os.replace(tmp, final)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync directory)."""
    payload = data.encode() if isinstance(data, str) else data
    with atomic_path(path, durable=durable) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(payload)
    return Path(path)


def create_exclusive(
    path: str | os.PathLike[str], data: bytes | str, *, durable: bool = True
) -> bool:
    """Create ``path`` with ``data`` only if it does not exist (O_EXCL); return whether it did.

    The content is written to a temporary file first and then hard-linked to ``path``: ``link``
    fails if the target exists, so creation is exclusive *and* the file is never seen half
    written. Used for attempt records, where two launches must not both win. ``durable=False``
    skips the two fsyncs (file and directory): for elastic claims, whose loss in a crash of
    the machine only makes them look dead (their claimer died with it).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    payload = data.encode() if isinstance(data, str) else data
    with open(tmp, "wb") as fh:
        fh.write(payload)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    if durable:
        fsync_dir(final.parent)
    return True
