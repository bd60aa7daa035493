"""Value types of an attempt: how it runs, what rank 0 decided, how it ended.

Launchers, the CLI, the Python API and the Slurm submission all pass these around; the module
imports nothing heavy (no numpy at run time, no MPI), so importing a value type never drags in
the rank loop.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpc_curator.errors import UsageError

#: Set by launchers that report the result themselves (rank 0 then stays quiet).
PARENT_ENV = "HPC_CURATOR_PARENT"
#: PID of the local launcher (``hpc-curate run --ranks``): ``cancel`` signals it.
LAUNCHER_PID_ENV = "HPC_CURATOR_LAUNCHER_PID"

if TYPE_CHECKING:
    import numpy as np

    from hpc_curator.model.indexruns import IndexRuns

#: Work schedules of the rank loop.
SCHEDULES = ("strided", "block", "dynamic")

#: Called with every commit record an attempt writes (progress displays).
OnCommit = Callable[[dict[str, Any]], None]


class Status(enum.StrEnum):
    """How a run stands; each status carries the exit code the CLI returns for it."""

    COMPLETE = "complete"
    FAILED = "failed"
    INCOMPLETE = "incomplete"

    @property
    def exit_code(self) -> int:
        """0 every index succeeded, 1 some failed, 3 some are still pending (resume)."""
        return {"complete": 0, "failed": 1}.get(self.value, 3)


#: exit codes the rank program itself gives (bad input, run dir, launcher): they say what
#: went wrong, whatever the launcher around it adds
OWN_CODES = (2, 4, 5)


def exit_code_for(
    status: str,
    reasons: list[str] | tuple[str, ...] = (),
    returncode: int = 0,
    resumable: bool = True,
) -> int:
    """The exit code of an attempt, a rank or an elastic task: the one place that decides it.

    0 complete, 1 some indices failed (or the failure budget was exceeded), 3 incomplete
    (resume), 2/4/5 as the rank program said (bad input, run dir, launcher).

    Parameters
    ----------
    status
        The manifest's status (``complete``, ``failed``, ``incomplete``).
    reasons
        Why ranks stopped early (``max_failures``, ``SIGTERM``...); the failure budget being
        exceeded is a failure (1), not an incomplete run.
    returncode
        Exit status of the launcher that ran the ranks (``mpiexec``, a job): one of the rank
        program's own codes wins; any other non-zero one wins over a finished status, and an
        incomplete run stays 3 (a rank's ``os._exit(1)`` or a signal: resume).
    resumable
        ``False`` when the run is incomplete because its job failed by itself (an MPI_Init
        abort, a wrong plugin): 5, re-running as it is cannot help.
    """
    if returncode in OWN_CODES:
        return returncode
    if "max_failures" in reasons:
        return 1
    try:
        code = Status(status).exit_code
    except ValueError:
        code = 3
    if code == 3:
        return 3 if resumable else 5
    return returncode or code


@dataclass(frozen=True)
class RunSettings:
    """How a launch runs (not part of the run's identity; may change between attempts).

    Parameters
    ----------
    commit_every
        Commit after this many indices (durability vs. fsync cost).
    commit_seconds
        ... or after this many seconds, whichever comes first.
    max_failures
        Failure budget: a count (>= 1) or a fraction of the frozen indices (< 1); ``None``
        means never stop early.
    max_failure_fraction
        Failure budget as a fraction of the frozen indices, 0 to 1 (``--max-failures 5%``);
        takes precedence over ``max_failures``.
    accept_code_change
        Continue a run although the pipeline's code changed since it began (recorded).
    index_timeout
        Seconds an index may run; longer ones fail (``IndexTimeout``); one stuck in C code
        past a grace period ends its rank (a crash).
    max_index_crashes
        An index that killed its rank this many times is recorded as failed (0: never).
    schedule
        ``strided`` (default), ``block`` or ``dynamic``.
    chunk_size
        Indices per claim under the dynamic schedule (default: about 16 claims per rank).
    retry_failed
        Re-run the indices currently recorded as failed instead of the pending ones.
    fsync
        Fsync journals and segments (turn off only for benchmarks of the protocol itself).
    track_memory, track_gpu
        Record each index's peak Python memory (tracemalloc) / GPU memory (torch.cuda).
    """

    commit_every: int = 1000
    commit_seconds: float = 30.0
    max_failures: float | None = None
    schedule: str = "strided"
    chunk_size: int | None = None
    retry_failed: bool = False
    fsync: bool = True
    max_failure_fraction: float | None = None
    accept_code_change: bool = False
    index_timeout: float | None = None
    max_index_crashes: int = 2
    track_memory: bool = False
    track_gpu: bool = False

    def __post_init__(self) -> None:
        import math

        if self.index_timeout is not None and not self.index_timeout > 0:
            raise UsageError(f"--index-timeout must be > 0 seconds, got {self.index_timeout}")
        if self.max_index_crashes < 0:
            raise UsageError(f"--max-index-crashes must be >= 0, got {self.max_index_crashes}")
        for name in ("max_failures", "max_failure_fraction", "commit_seconds", "index_timeout"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise UsageError(f"{name.replace('_', '-')} must be a finite number, got {value}")
        if self.max_failure_fraction is not None and not 0 <= self.max_failure_fraction <= 1:
            raise UsageError(
                f"--max-failures {self.max_failure_fraction * 100:g}% is not between 0% and 100%"
            )
        if self.commit_every < 1:
            raise UsageError(f"commit_every must be >= 1, got {self.commit_every}")
        if self.commit_seconds <= 0:
            raise UsageError(f"commit_seconds must be > 0, got {self.commit_seconds}")
        if self.max_failures is not None and self.max_failures < 0:
            raise UsageError(f"--max-failures must be >= 0, got {self.max_failures}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}", f"choose one of {SCHEDULES}")

    def budget(self, total: int) -> int | None:
        """The failure budget as a count of indices (a fraction is of ``total``)."""
        if self.max_failure_fraction is not None:
            return int(self.max_failure_fraction * total)
        if self.max_failures is None:
            return None
        if 0 < self.max_failures < 1:
            return int(self.max_failures * total)
        return int(self.max_failures)


@dataclass
class Plan:
    """What rank 0 decided for this attempt; broadcast to every rank."""

    run_dir: str
    attempt: int
    spec: dict[str, Any]
    cwd: str
    #: an array, or :class:`~hpc_curator.model.indexruns.IndexRuns` when runs are much smaller
    pending: np.ndarray | IndexRuns
    total: int
    recorded: int
    failures_before: int
    settings: RunSettings
    #: indices that killed their rank too often, recorded as failed by rank 0 (poison.py)
    crashed: list[dict[str, Any]] = field(default_factory=list)
    #: indices whose rank died while running them (fewer times than the limit): rank 0 runs
    #: them first, alone; they are not in ``pending``
    suspects: list[int] = field(default_factory=list)
    #: with index groups (:mod:`hpc_curator.model.groups`): ``pending`` is ordered in units, unit
    #: ``u`` being ``pending[unit_bounds[u]:unit_bounds[u + 1]]``; ``None``: no groups
    unit_bounds: np.ndarray | None = None


@dataclass
class RunResult:
    """Outcome of a finished attempt."""

    exit_code: int
    status: str
    counts: dict[str, int]
    message: str
    run_dir: str
    manifest: dict[str, Any] = field(default_factory=dict)
    #: whether re-running the same command can finish an incomplete run (not when the job
    #: itself failed, e.g. in MPI_Init)
    resumable: bool = True


def one_line(doc: dict[str, Any], reasons: list[str] | None = None) -> str:
    """A one-line summary for the terminal."""
    c = doc["counts"]
    line = f"{c['ok']}/{c['total']} ok, {c['failed']} failed, {c['pending']} pending"
    if doc["failure_types"]:
        kinds = ", ".join(f"{k} x{v}" for k, v in list(doc["failure_types"].items())[:3])
        line += f" ({kinds})"
    if reasons:
        line += f"; stopped early: {', '.join(reasons)}"
    if doc.get("unmerged_outputs"):
        line += f"; not merged yet: {', '.join(doc['unmerged_outputs'])}"
    return line
