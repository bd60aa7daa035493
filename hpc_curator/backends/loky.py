"""loky backend: joblib's robust process pool."""

from __future__ import annotations

from hpc_curator.backends.base import Launch, RunBackend, resolve_n_jobs
from hpc_curator.backends.pool import run_pool
from hpc_curator.engine.signals import StopFlag
from hpc_curator.engine.values import OnCommit, RunResult


class LokyBackend(RunBackend):
    """One joblib/loky worker per slot (``pip install 'hpc-curator[loky]'``)."""

    name = "loky"
    requires = ("joblib",)
    description = "joblib.Parallel with the loky process pool"

    def launch(
        self, launch: Launch, *, stop: StopFlag | None = None, on_commit: OnCommit | None = None
    ) -> RunResult:
        from joblib import Parallel, delayed

        n = resolve_n_jobs(launch.n_jobs)

        def map_fn(fn, args):  # type: ignore[no-untyped-def]
            return Parallel(n_jobs=n, backend="loky")(delayed(fn)(*a) for a in args)

        return run_pool(launch, n, self.name, map_fn, stop=stop, on_commit=on_commit)
