"""Files inside the run directory, never through a symbolic link.

A run directory often lives in a group-writable project space: anyone who can write there can
plant a symlink. The project never follows one inside the run dir: new files are created with
``O_EXCL | O_NOFOLLOW`` (a planted link makes the creation fail instead of truncating or
appending to its target) and directories are checked with ``lstat``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from hpc_curator.errors import RunDirError

#: flags of a file this process creates: new, never a link's target, closed on exec
NEW_FILE = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _refuse(path: Path) -> RunDirError:
    return RunDirError(
        f"{path} is a symbolic link: hpc-curator never follows links inside a run directory",
        "replace it with a real directory",
    )


def check_real_dir(path: Path) -> bool:
    """Whether ``path`` exists as a real directory (``False`` when it is missing).

    Raises
    ------
    RunDirError
        ``path`` is a symbolic link, or exists and is not a directory.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise _refuse(path)
    if not stat.S_ISDIR(mode):
        raise RunDirError(f"{path} is not a directory", "move it out of the run directory")
    return True


def check_subdirs(root: Path, names: Iterable[str], children: Iterable[str] = ()) -> None:
    """Check that each existing ``root/<name>`` is a real directory (``lstat``), and for the
    names in ``children`` every directory or link inside it too. ``root`` may be a link.

    Raises
    ------
    RunDirError
        One line naming the first symbolic link (or file where a directory belongs).
    """
    nested = set(children)
    for name in names:
        path = Path(root) / name
        if check_real_dir(path) and name in nested:
            with os.scandir(path) as entries:
                found = sorted(Path(e.path) for e in entries if e.is_dir() or e.is_symlink())
            for child in found:
                check_real_dir(child)


def ensure_dir(path: Path, root: Path | None = None) -> Path:
    """Create ``path`` (parents included) and check that it, and every component below
    ``root`` (exclusive: the run dir itself may be a link), is a real directory.

    The components below ``root`` are checked (``lstat``) and created one at a time, top
    down, so nothing is ever created through a planted link. With ``root=None`` only
    ``path`` itself is checked (its parents are created as ``mkdir -p`` would).

    Parameters
    ----------
    path
        The directory to create or check.
    root
        The run directory ``path`` lies in, or ``None``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    RunDirError
        A component is a symbolic link (or not a directory).
    """
    path = Path(path)
    if root is not None and path == Path(root):
        path.mkdir(parents=True, exist_ok=True)  # the run dir itself may be a link
        return path
    chain = [path]
    if root is not None:
        root = Path(root)
        parent = path.parent
        while parent != root and root in parent.parents:
            chain.append(parent)
            parent = parent.parent
    chain[-1].parent.mkdir(parents=True, exist_ok=True)  # the run dir, or outside it
    for part in reversed(chain):  # top down: a link is refused before anything below it
        if not check_real_dir(part):
            try:
                os.mkdir(part)
            except FileExistsError:
                pass  # created meanwhile by another rank: checked below
            if not check_real_dir(part):
                raise RunDirError(f"cannot create directory {part}")
    return path


def open_append_new(path: Path) -> BinaryIO:
    """A new file opened for appending (fails if ``path`` exists, link or not)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | NEW_FILE, 0o644)
    return os.fdopen(fd, "ab")


def open_read(path: Path) -> BinaryIO:
    """``path`` opened for reading, refusing a symbolic link (``OSError`` ELOOP)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return os.fdopen(fd, "rb")
