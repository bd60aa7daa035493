"""Typed errors raised by the library; only the CLI turns them into messages and exit codes.

Every error carries a one-line ``message`` (what is wrong, echoing the value) and an optional
``hint`` (how to fix it). The rank program and the library never print or exit on their own.
"""

from __future__ import annotations

import sys
from typing import NoReturn


class CuratorError(Exception):
    """Base class of every error hpc-curator raises on purpose.

    Parameters
    ----------
    message
        One line naming the problem and echoing the offending value.
    hint
        Optional one-line suggestion of how to fix it.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        """Return ``message`` followed by the hint, on one line."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(CuratorError):
    """Bad user input: options, indices, parameters."""


class IndexValueError(UsageError, ValueError):
    """An index that is not an integer (a float, even a whole one, a string, a bool, None),
    or a ``partition_indices`` that raised or returned something else than groups of indices.

    Also a :class:`ValueError`, so that Python callers can catch it as one.
    """


class SpecError(CuratorError):
    """A pipeline reference or spec that cannot be loaded."""


class RunDirError(CuratorError):
    """A run directory that is missing, corrupt or belongs to another run."""

    exit_code = 4


class RunBusyError(RunDirError):
    """Another live attempt owns the run directory."""


class BackendError(CuratorError):
    """An unknown or unavailable backend."""


class LaunchError(CuratorError):
    """The launcher (mpiexec, sbatch, srun) is missing or failed to start ranks."""

    exit_code = 5


class WorldError(LaunchError):
    """The MPI world is not what the launch asked for (e.g. singletons under srun)."""


class StorageError(CuratorError):
    """The run directory's filesystem refused a write: full, read-only, not a directory."""

    exit_code = 4


class AttemptError(CuratorError):
    """A rank could not finish its part of an attempt (the run dir stays consistent)."""

    exit_code = 3


def from_exception(exc: BaseException, context: str) -> CuratorError:
    """One-line :class:`CuratorError` for any exception, for relaying between ranks.

    Filesystem errors say what happened to which file and how to fix it; other exceptions
    keep their type and message.
    """
    import errno

    if isinstance(exc, CuratorError):
        return exc
    if isinstance(exc, OSError):
        where = exc.filename or ""
        reason = exc.strerror or str(exc)
        hints = {
            errno.ENOSPC: ("disk full", "free space or use a --run-dir on another filesystem"),
            errno.EDQUOT: ("disk quota exceeded", "free space or raise the quota"),
            errno.EROFS: ("read-only filesystem", "use a writable --run-dir"),
            errno.EACCES: ("permission denied", "use a --run-dir you can write to"),
            errno.ENOTDIR: ("not a directory", "--run-dir must be a directory, not a file"),
            errno.EEXIST: ("exists and is not a directory", "choose another --run-dir"),
        }
        what, hint = hints.get(exc.errno or 0, (reason, None))
        target = f" {where}" if where else ""
        return StorageError(f"{context}: {what}:{target}".rstrip(":"), hint)
    text = str(exc).strip().splitlines()
    return AttemptError(f"{context}: {type(exc).__name__}: {text[0] if text else ''}".rstrip(": "))


class ShardError(CuratorError):
    """A shard segment that cannot be read or merged."""

    exit_code = 4


def exit_with(exc: CuratorError | OSError) -> NoReturn:
    """The command line's one error edge: ``Error: <one line>`` on stderr, then exit with the
    error's code. An OSError (a full disk, a read-only or missing directory) says what
    happened to which file; an error another rank already reported (``relayed``) is not
    repeated."""
    error = exc if isinstance(exc, CuratorError) else from_exception(exc, "cannot write")
    if not getattr(exc, "relayed", False):
        print(f"Error: {error.format()}", file=sys.stderr, flush=True)
    sys.exit(error.exit_code)
