"""dask backend: ``dask.bag`` on the multiprocessing scheduler."""

from __future__ import annotations

from hpc_curator.backends.base import Launch, RunBackend, resolve_n_jobs
from hpc_curator.backends.pool import run_pool
from hpc_curator.engine.signals import StopFlag
from hpc_curator.engine.values import OnCommit, RunResult


class DaskBackend(RunBackend):
    """One dask.bag partition per slot (``pip install 'hpc-curator[dask]'``)."""

    name = "dask"
    requires = ("dask",)
    description = "dask.bag with the processes scheduler"

    def launch(
        self, launch: Launch, *, stop: StopFlag | None = None, on_commit: OnCommit | None = None
    ) -> RunResult:
        import dask.bag as db

        n = resolve_n_jobs(launch.n_jobs)

        def map_fn(fn, args):  # type: ignore[no-untyped-def]
            bag = db.from_sequence(args, npartitions=len(args)).map(lambda a: fn(*a))
            return list(bag.compute(scheduler="processes", num_workers=n))

        return run_pool(launch, n, self.name, map_fn, stop=stop, on_commit=on_commit)
