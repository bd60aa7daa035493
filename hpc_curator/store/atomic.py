"""The one atomic-write helper.

A file is written under a unique temporary name in the *same* directory, flushed and fsynced,
renamed over the final name, and the directory is fsynced so the rename itself is durable. A
reader therefore sees either the old file or the complete new one, never a torn one, even after
SIGKILL or a node crash. Temporary names are ``.tmp-<12 hex digits>.<final name>``
(:func:`temp_name`) so readers can skip them and cleaners remove exactly those, never another
program's files and never through a symbolic link. An output never deletes what it would
replace unless that is an earlier output of the same kind (:func:`check_replaceable`).

Outputs written per index may be finished *behind* the caller: :func:`atomic_path` with
``defer=True`` hands the temporary to the process's active write-behind publisher (see
:mod:`hpc_curator.engine.writebehind`, which the rank loop activates), which fsyncs and renames it
on
a background thread while the next index computes; the rank loop waits for it before it
commits the index. Without an active publisher ``defer`` changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from hpc_curator.errors import RunDirError

TMP_PREFIX = ".tmp-"
#: random bytes in a temporary name (:func:`temp_name`), written as twice as many hex digits
_TMP_RANDOM_BYTES = 6
#: exactly the names :func:`temp_name` produces: prefix, 12 lowercase hex digits, ``.``, name
_TMP_NAME = re.compile(rf"{re.escape(TMP_PREFIX)}[0-9a-f]{{{2 * _TMP_RANDOM_BYTES}}}\.(.+)")
#: an empty directory inside every directory output :func:`finish` places: what lets a later
#: output replace it (a directory without it is the user's, never deleted). A directory, not
#: a file, so the output's tree digest and size (files only) are what the writer wrote.
OUTPUT_MARKER = ".hpc-curator-output"


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
    return path.with_name(f"{TMP_PREFIX}{os.urandom(_TMP_RANDOM_BYTES).hex()}.{path.name}")


def is_temp_name(name: str, final: str | None = None) -> bool:
    """Whether ``name`` is exactly what :func:`temp_name` produces (of ``final``, if given).

    Parameters
    ----------
    name
        A directory entry's name.
    final
        The final name the temporary must belong to; ``None`` for any.

    Returns
    -------
    bool
        ``True`` only for ``.tmp-`` + 12 lowercase hex digits + ``.`` + a final name.
    """
    match = _TMP_NAME.fullmatch(name)
    return match is not None and (final is None or match.group(1) == final)


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
    """Remove a file, a symbolic link (never its target) or a real directory tree; nothing if
    it is gone. A directory is recognised with ``lstat``: a link to one is unlinked itself."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        import shutil

        # rmtree neither follows a link below ``path`` nor removes what one points to
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def remove_stale_temps(directory: Path, name: str | None = None) -> int:
    """Remove temporary files and directories a crashed writer left in ``directory``.

    Only entries named exactly as :func:`temp_name` names them are removed (with ``name``,
    only the temporaries of that one final name: for a directory other programs may write to
    as well). ``directory`` itself is left alone when it is a symbolic link, and a temporary
    that is a link is unlinked, its target untouched. Call it only when no writer of ours can
    be active there (at the start of an attempt). Returns how many entries were removed.
    """
    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            return 0  # missing, a file, or a link: nothing of ours to clean through it
        with os.scandir(directory) as entries:
            stale = [Path(e.path) for e in entries if is_temp_name(e.name, name)]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for p in stale:
        remove(p)
    return len(stale)


def check_replaceable(final: Path, *, directory: bool | None = None) -> None:
    """Refuse, with one line, to place an output at ``final`` over what is not ours to replace.

    A file may replace a file. A directory may replace a directory only when that is an earlier
    output of ours (it carries :data:`OUTPUT_MARKER`). A file over a directory, a directory
    over a file, a directory over one without the marker, or anything over a symbolic link is
    refused: the existing entry is never deleted to make room.

    Parameters
    ----------
    final
        Where the output goes.
    directory
        Whether the output is a directory; ``None`` when not known yet (at the start of a
        run): then only what no output may replace is refused.

    Raises
    ------
    RunDirError
        ``final`` holds something an output must not replace.
    """
    try:
        mode = os.lstat(final).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    hint = "move it away or choose another output path"
    if stat.S_ISLNK(mode):
        raise RunDirError(
            f"output path {final} is a symbolic link: hpc-curator replaces no link", hint
        )
    if stat.S_ISDIR(mode):
        if directory is False:
            raise RunDirError(
                f"output path {final} is an existing directory: an output file never replaces it",
                hint,
            )
        if not stat.S_ISDIR(_lstat_mode(final / OUTPUT_MARKER)):
            raise RunDirError(
                f"output path {final} is an existing directory that hpc-curator did not write: "
                "it is never deleted to place an output",
                hint,
            )
    elif directory is True:
        raise RunDirError(
            f"output path {final} is an existing file: a directory output never replaces it", hint
        )


def _lstat_mode(path: Path) -> int:
    """``lstat`` mode of ``path``; 0 when it is missing."""
    try:
        return os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return 0


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, durable: bool = True, defer: bool = False
) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path`` atomically.

    Use this for libraries that open files themselves (h5py, pyarrow, zarr). The writer may
    create a file or a directory (a Zarr store) at the temporary path; a directory is fsynced
    file by file and renamed into place as a whole. Only an earlier directory output may be
    replaced by a directory (see :func:`finish`; anything else at ``path`` that is not a file
    replaced by a file is refused, never deleted). Replacing it takes two renames (the old one
    is moved aside first, then deleted): a crash between them leaves ``path`` missing and the
    old tree under a ``.tmp-`` name, never a mix of the two. On an exception the temporary
    file or directory is removed and ``path`` is untouched.

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

    A directory output gets :data:`OUTPUT_MARKER`, so that a later output may replace it.
    What is at ``final`` is never deleted unless it is an earlier output of the same kind
    (:func:`check_replaceable`). The directory is not fsynced here: the caller does that,
    once per directory.

    Raises
    ------
    RunDirError
        ``final`` holds a directory (or file, or link) an output must not replace.
    """
    is_dir = stat.S_ISDIR(os.lstat(tmp).st_mode)
    check_replaceable(final, directory=is_dir)
    if is_dir:
        with contextlib.suppress(FileExistsError):
            os.mkdir(tmp / OUTPUT_MARKER)
    if durable and is_dir:
        _fsync_tree(tmp)
    elif durable:
        fsync_file(tmp)
    if is_dir and stat.S_ISDIR(_lstat_mode(final)):  # an earlier output of ours (checked)
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
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    durable: bool = True,
    make_parent: bool = True,
) -> bool:
    """Create ``path`` with ``data`` only if it does not exist (O_EXCL); return whether it did.

    The content is written to a temporary file first and then hard-linked to ``path``: ``link``
    fails if the target exists, so creation is exclusive *and* the file is never seen half
    written. Used for attempt records, where two launches must not both win. ``durable=False``
    skips the two fsyncs (file and directory): for elastic claims, whose loss in a crash of
    the machine only makes them look dead (their claimer died with it). ``make_parent=False``
    never creates the directory: a claim board that was removed stays removed (the caller
    gets ``FileNotFoundError``).
    """
    final = Path(path)
    if make_parent:
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
