"""The launcher contract: start N workers that each run the rank program.

A backend only decides how workers start and how each learns its slot and the world size;
the attempt (begin, the rank loop, end), journals, shards and the manifest are shared
(:mod:`hpc_curator.engine.attempt`). Every backend honours ``stop`` (commit and end early) and
``on_commit`` (called with each commit record, for progress displays).
"""

from __future__ import annotations

import abc
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from hpc_curator.engine.signals import StopFlag
from hpc_curator.engine.values import OnCommit, RunResult, RunSettings
from hpc_curator.model.pipeline import Pipeline
from hpc_curator.store import rundir
from hpc_curator.ui import follow


@dataclass(frozen=True)
class Launch:
    """Everything a backend needs to run one attempt.

    Parameters
    ----------
    run_dir
        Run directory (created by rank 0 / the parent when missing).
    settings
        Commit, schedule and failure-budget settings.
    spec
        Frozen pipeline spec (required to create a run; optional to resume).
    indices
        Index selection text (``None``: all indices, or the frozen list on resume).
    n_jobs
        Number of workers / ranks.
    pipeline
        An already-built pipeline (in-process backends may use it instead of the spec).
    gpus_per_rank
        GPUs each rank or worker binds (``--gpus-per-rank``; ``None``: no binding asked).
    """

    run_dir: str
    settings: RunSettings
    spec: dict[str, Any] | None = None
    indices: str | Sequence[int] | None = None
    n_jobs: int = 1
    pipeline: Pipeline | None = None
    gpus_per_rank: int | None = None

    def child_env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` for the processes a launcher starts, with this launch's GPU binding."""
        if self.gpus_per_rank is None:
            return env
        from hpc_curator.runtime.gpus import GPUS_PER_RANK_ENV

        return {**env, GPUS_PER_RANK_ENV: str(self.gpus_per_rank)}


class RunBackend(abc.ABC):
    """Base class of launchers registered under a name (see :mod:`hpc_curator.backends`)."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    @classmethod
    def missing(cls) -> list[str]:
        """Import names of required packages that are not installed."""
        return [m for m in cls.requires if importlib.util.find_spec(m) is None]

    @classmethod
    def available(cls) -> bool:
        """Whether every required package is installed."""
        return not cls.missing()

    @abc.abstractmethod
    def launch(
        self, launch: Launch, *, stop: StopFlag | None = None, on_commit: OnCommit | None = None
    ) -> RunResult:
        """Run one attempt and return its result."""


def available_cpus() -> int:
    """CPUs this process may use: affinity mask, capped by ``SLURM_CPUS_PER_TASK``."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    from hpc_curator.slurm.env import slurm_env

    slurm = slurm_env().cpus_per_task
    if slurm:
        n = min(n, slurm)
    return max(1, n)


def resolve_n_jobs(n_jobs: int) -> int:
    """``-1`` → :func:`available_cpus`; otherwise ``n_jobs`` (must be >= 1)."""
    from hpc_curator.errors import UsageError

    if n_jobs == -1:
        return available_cpus()
    if n_jobs < 1:
        raise UsageError(f"n_jobs must be >= 1 or -1, got {n_jobs}")
    return n_jobs


class JournalFailureCounter:
    """Global failure count for in-process pools, read from this attempt's journals.

    Each worker adds its own failures locally and, when asked, the committed failures of the
    other workers of the same attempt (read incrementally). Other workers' failures are seen
    after their next commit, so the budget reacts within one commit interval.
    """

    def __init__(self, run_dir: str, attempt: int, rank: int, baseline: int) -> None:
        self.rd = rundir.RunDir(run_dir)
        self.attempt = attempt
        self.rank = rank
        self.baseline = baseline
        self.local = 0
        self.others = 0
        self._follower = follow.JournalFollower(self.rd)

    def add(self, n: int) -> int:
        self.local += n
        for (attempt, rank), rec in self._follower.poll():
            if attempt == self.attempt and rank != self.rank and rec.get("t") == "commit":
                self.others += len(rec.get("err", {}))
        return self.baseline + self.local + self.others

    def free(self) -> None:
        return None


#: Parent of the run directories made when no ``--run-dir``/``run_dir`` is given
RUNS_ROOT = "hpc-curator-runs"


def new_run_dir(root: str | os.PathLike[str] = RUNS_ROOT) -> str:
    """A fresh run directory name under ``root`` (never in a home cache), unique per call:
    two runs started in the same second by one process must never resume each other."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    while True:
        path = Path(root).absolute() / f"{stamp}-{os.getpid()}-{os.urandom(3).hex()}"
        if not path.exists():
            return str(path)


def default_backend(backend: str | None, n_jobs: int) -> str:
    """``backend``, or what ``n_jobs`` asks for: several workers mean ``process_pool``.

    (physicsnemo-curator ran ``n_jobs=4`` without a backend sequentially, silently.)
    """
    if backend is not None:
        return backend
    return "process_pool" if n_jobs != 1 else "sequential"
