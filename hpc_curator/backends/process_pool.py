"""process_pool backend: ``concurrent.futures.ProcessPoolExecutor`` (spawned workers)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from hpc_curator.backends.base import Launch, RunBackend, resolve_n_jobs
from hpc_curator.backends.pool import run_pool
from hpc_curator.engine.signals import StopFlag
from hpc_curator.engine.values import OnCommit, RunResult


class ProcessPoolBackend(RunBackend):
    """One spawned process per worker slot (standard library only)."""

    name = "process_pool"
    description = "concurrent.futures process pool on this machine"

    def launch(
        self, launch: Launch, *, stop: StopFlag | None = None, on_commit: OnCommit | None = None
    ) -> RunResult:
        n = resolve_n_jobs(launch.n_jobs)

        def map_fn(fn, args):  # type: ignore[no-untyped-def]
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
                futures = [pool.submit(fn, *a) for a in args]
                return [f.result() for f in futures]

        return run_pool(launch, n, self.name, map_fn, stop=stop, on_commit=on_commit)
