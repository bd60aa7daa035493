"""Sequential backend: the rank program in this process, as a world of one."""

from __future__ import annotations

from hpc_curator.backends.base import Launch, RunBackend
from hpc_curator.engine.attempt import run_here
from hpc_curator.engine.signals import StopFlag
from hpc_curator.engine.values import OnCommit, RunResult


class SequentialBackend(RunBackend):
    """Run every index in the calling process (rank 0 of a world of size 1)."""

    name = "sequential"
    description = "this process, one index after another"

    def launch(
        self, launch: Launch, *, stop: StopFlag | None = None, on_commit: OnCommit | None = None
    ) -> RunResult:
        return run_here(
            launch.run_dir,
            launch.settings,
            spec=launch.spec,
            indices=launch.indices,
            launcher=self.name,
            stop=stop,
            on_commit=on_commit,
            pipeline=launch.pipeline,
            gpus_per_rank=launch.gpus_per_rank,
        )
