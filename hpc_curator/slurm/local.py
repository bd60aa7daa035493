"""``--cluster local``: a submitit LocalExecutor job that runs the ranks with mpiexec."""

from __future__ import annotations

from dataclasses import dataclass

from hpc_curator.engine.values import RunSettings


@dataclass
class LocalMPIJob:
    """Callable run by submitit's LocalExecutor: ``mpiexec -n ranks`` of the rank program.

    Returns the run's exit code.
    """

    run_dir: str
    settings: RunSettings
    ranks: int

    def __call__(self) -> int:
        from hpc_curator.backends.base import Launch
        from hpc_curator.backends.mpi import MPIBackend

        launch = Launch(run_dir=self.run_dir, settings=self.settings, n_jobs=self.ranks)
        return MPIBackend().launch(launch).exit_code
