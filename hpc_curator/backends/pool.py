"""Shared glue for in-process pools (process_pool, loky, dask).

The parent plays rank 0: it prepares the attempt, keeps the heartbeat, hands one slot per
worker to the pool, then finishes (merge + manifest). Each worker runs :func:`pool_worker`, the
same rank loop as an MPI rank, with its slot number as rank: journals and shard segments are
named by slot, never by PID.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from hpc_curator import rundir
from hpc_curator import spec as specmod
from hpc_curator.backends.base import JournalFailureCounter, Launch, available_cpus
from hpc_curator.gather import finish
from hpc_curator.pipeline import Pipeline
from hpc_curator.rank import Heartbeat, Plan, RunResult, prepare, work
from hpc_curator.world import World, thread_limits, tune_malloc

MapFn = Callable[[Callable[..., dict[str, Any]], list[tuple[Any, ...]]], list[dict[str, Any]]]


def pool_worker(plan: Plan, slot: int, size: int, pipeline: Pipeline | None) -> dict[str, Any]:
    """Run slot ``slot`` of ``size`` (executed inside a pool worker process)."""
    os.environ.setdefault("HPC_CURATOR_NO_MPI", "1")
    tune_malloc()
    world = World(rank=slot, size=size)
    failures = JournalFailureCounter(plan.run_dir, plan.attempt, slot, plan.failures_before)
    return work(plan, world, pipeline=pipeline, failures=failures)


@contextlib.contextmanager
def worker_thread_caps(n_workers: int) -> Iterator[dict[str, str]]:
    """Cap BLAS/OpenMP threads of the worker processes a pool starts meanwhile.

    As the mpi backend does for its ranks: each worker gets its share of the CPUs, otherwise
    every worker's BLAS starts a thread per core and ``n_workers`` workers oversubscribe the
    machine ``n_workers``-fold. Workers are spawned (they inherit this environment; BLAS reads
    it when numpy is imported). Variables the user set are left alone; the parent's own
    environment is restored afterwards.
    """
    caps = {
        k: v
        for k, v in thread_limits(max(1, available_cpus() // n_workers)).items()
        if k not in os.environ
    }
    os.environ.update(caps)
    try:
        yield caps
    finally:
        for k in caps:
            os.environ.pop(k, None)


def run_pool(launch: Launch, n_workers: int, launcher: str, map_fn: MapFn) -> RunResult:
    """Prepare, run ``n_workers`` slots through ``map_fn``, finish."""
    from hpc_curator.errors import UsageError

    if launch.settings.schedule == "dynamic":
        raise UsageError(
            f"the dynamic schedule needs MPI; backend {launcher!r} supports strided and block",
            "use --ranks N (mpi) or --schedule strided",
        )
    plan = prepare(
        launch.run_dir,
        launch.settings,
        World().identity(),
        spec=launch.spec,
        indices=launch.indices,
        launcher=launcher,
    )
    pipeline = launch.pipeline or specmod.build(plan.spec)
    rd = rundir.RunDir(plan.run_dir)
    args = [(plan, slot, n_workers, launch.pipeline) for slot in range(n_workers)]
    with Heartbeat(rd.heartbeat_path(plan.attempt)), worker_thread_caps(n_workers):
        summaries = map_fn(pool_worker, args)
    return finish(plan, summaries, pipeline)
