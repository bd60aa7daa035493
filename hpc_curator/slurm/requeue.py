"""Requeue on a time limit: rank 0 asks, the job script requeues once every rank has exited.

When the time-limit warning (SIGUSR2) stops a run, rank 0 leaves a request file
``<run dir>/slurm/requeue-<jobid>``. The rendered job script (``slurm_templates/mpi.sbatch``, via
:func:`srun_block`) runs ``scontrol requeue`` only after ``srun`` has returned. Requeueing from
inside the step instead made Slurm signal and then SIGKILL ranks that were still in
``MPI_Finalize``. That is harmless to the run (everything is committed first), but it leaves
MPI shared memory on the nodes (see :mod:`hpc_curator.slurm.stale_shm`).

The job script exports :data:`REQUEUE_DIR_ENV` and :data:`MAX_REQUEUES_ENV`. A hand-written
script that does not export them never requeues: the run stops with exit code 3 (incomplete)
and resumes with ``hpc-curate resume`` or by submitting the script again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

from hpc_curator.slurm.env import SlurmEnv
from hpc_curator.store.atomic import atomic_write
from hpc_curator.store.rundir import requeue_flag

REQUEUE_DIR_ENV = "HPC_CURATOR_REQUEUE_DIR"
MAX_REQUEUES_ENV = "HPC_CURATOR_MAX_REQUEUES"


def flag_path(directory: str | os.PathLike[str], job_id: str) -> Path:
    """The request file for one job (named by :func:`hpc_curator.store.rundir.requeue_flag`)."""
    return requeue_flag(directory, job_id)


def request_requeue(env: Mapping[str, str] | None = None) -> bool:
    """Ask the job script to requeue this job; return whether a request was left.

    Call on rank 0 after a run stopped on SIGUSR2. No request is left outside a job script
    that handles it, or once ``SLURM_RESTART_COUNT`` reached the allowed number of requeues.
    """
    env = os.environ if env is None else env
    slurm = SlurmEnv.read(env)
    job, restarts = slurm.job_id, slurm.restart_count
    directory = env.get(REQUEUE_DIR_ENV)
    try:
        allowed = int(env.get(MAX_REQUEUES_ENV) or 0)
    except ValueError:
        return False
    if not job or not directory or restarts >= allowed:
        return False
    path = flag_path(directory, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"job_id": job, "restart": restarts, "requested": time.time()}
    atomic_write(path, json.dumps(record) + "\n")
    return True


def requeue_exports(directory: str | os.PathLike[str], max_requeues: int) -> dict[str, str]:
    """Environment the job script exports so that rank 0 can ask for a requeue."""
    return {REQUEUE_DIR_ENV: str(directory), MAX_REQUEUES_ENV: str(max_requeues)}


def srun_block(srun_line: str) -> str:
    """Wrap the ``srun`` line: drop a stale request, run, then requeue if rank 0 asked."""
    flag = f'"{flag_path("$" + REQUEUE_DIR_ENV, "$SLURM_JOB_ID")}"'  # expanded by the shell
    return "\n".join(
        [
            f"rm -f {flag}  # a request from an earlier run of this job is void",
            srun_line,
            "status=$?",
            "# rank 0 asked for a requeue (time limit near, restarts left): requeue now that",
            "# every rank has left MPI, so that none is killed half-way through MPI_Finalize",
            f"if [ -e {flag} ]; then",
            f"  rm -f {flag}",
            '  scontrol requeue "$SLURM_JOB_ID" && exit 0',
            "fi",
            'exit "$status"',
        ]
    )
