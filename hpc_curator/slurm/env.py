"""The one reader of the Slurm task environment (job, array, step, node, restarts, CPUs).

Every module that needs to know where it runs under Slurm asks :func:`slurm_env` instead of
reading ``SLURM_*`` variables itself, so all of them agree (for example on which id names the
job of an array task).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class SlurmEnv:
    """What Slurm told this process about itself (every field ``None`` outside Slurm).

    Attributes
    ----------
    job_id
        ``SLURM_JOB_ID``: this job's own id (for an array task, the task's job id, which
        ``squeue``/``sacct``/``scontrol`` accept).
    array_job_id, array_task_id
        ``SLURM_ARRAY_JOB_ID`` / ``SLURM_ARRAY_TASK_ID`` for array tasks.
    step_id
        ``SLURM_STEP_ID`` (``SLURM_STEPID`` on old releases).
    node
        ``SLURMD_NODENAME``.
    node_id, local_id, proc_id
        ``SLURM_NODEID``, ``SLURM_LOCALID`` (rank on its node), ``SLURM_PROCID``.
    step_tasks
        ``SLURM_STEP_NUM_TASKS``: tasks srun started in this step.
    restart_count
        ``SLURM_RESTART_COUNT``: how often the job was requeued (0 for a first run).
    cpus_per_task
        ``SLURM_CPUS_PER_TASK``.
    """

    job_id: str | None = None
    array_job_id: str | None = None
    array_task_id: str | None = None
    step_id: str | None = None
    node: str | None = None
    node_id: str | None = None
    local_id: int | None = None
    proc_id: int | None = None
    step_tasks: int | None = None
    restart_count: int = 0
    cpus_per_task: int | None = None

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> SlurmEnv:
        """Read the variables from ``env`` (default ``os.environ``)."""
        env = os.environ if env is None else env
        return cls(
            job_id=env.get("SLURM_JOB_ID") or None,
            array_job_id=env.get("SLURM_ARRAY_JOB_ID") or None,
            array_task_id=env.get("SLURM_ARRAY_TASK_ID") or None,
            step_id=env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID") or None,
            node=env.get("SLURMD_NODENAME") or None,
            node_id=env.get("SLURM_NODEID") or None,
            local_id=_int(env.get("SLURM_LOCALID")),
            proc_id=_int(env.get("SLURM_PROCID")),
            step_tasks=_int(env.get("SLURM_STEP_NUM_TASKS")),
            restart_count=_int(env.get("SLURM_RESTART_COUNT")) or 0,
            cpus_per_task=_int(env.get("SLURM_CPUS_PER_TASK")),
        )

    @property
    def in_job(self) -> bool:
        """Whether this process runs inside a Slurm job."""
        return self.job_id is not None

    @property
    def in_step(self) -> bool:
        """Whether this process is a task of a job step (started by ``srun``)."""
        return self.job_id is not None and self.step_id is not None


def slurm_env(env: Mapping[str, str] | None = None) -> SlurmEnv:
    """The Slurm environment of this process (see :class:`SlurmEnv`)."""
    return SlurmEnv.read(env)
