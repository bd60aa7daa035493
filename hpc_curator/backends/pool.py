"""Shared glue for in-process pools (process_pool, loky, dask).

The attempt itself is :func:`hpc_curator.engine.slots.run_slots` (the parent begins and ends, each
worker slot runs the rank loop with its slot number as rank: journals and shard segments are
named by slot, never by PID). This module only caps the workers' BLAS/OpenMP threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from hpc_curator.backends.base import Launch, available_cpus
from hpc_curator.engine.signals import StopFlag
from hpc_curator.engine.slots import MapFn, run_slots
from hpc_curator.engine.values import OnCommit, RunResult
from hpc_curator.runtime.world import thread_limits


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


def run_pool(
    launch: Launch,
    n_workers: int,
    launcher: str,
    map_fn: MapFn,
    *,
    stop: StopFlag | None = None,
    on_commit: OnCommit | None = None,
) -> RunResult:
    """Run one attempt on ``n_workers`` pool slots started through ``map_fn``."""
    with worker_thread_caps(n_workers):
        return run_slots(
            launch.run_dir,
            launch.settings,
            n_workers,
            map_fn,
            spec=launch.spec,
            indices=launch.indices,
            launcher=launcher,
            stop=stop,
            on_commit=on_commit,
            pipeline=launch.pipeline,
            gpus_per_rank=launch.gpus_per_rank,
        )
