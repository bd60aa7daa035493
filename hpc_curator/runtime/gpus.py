"""One GPU (or N) per rank: each rank sees only its own devices.

Set before MPI and CUDA start: a rank's node-local index comes from its launcher's environment
(``SLURM_LOCALID`` under srun, ``MPI_LOCALRANKID`` under MPICH's Hydra and Intel MPI,
``OMPI_COMM_WORLD_LOCAL_RANK`` under Open MPI), and with ``--gpus-per-rank N`` local rank ``r``
gets devices ``r*N .. r*N+N-1`` of those the node offers (the inherited
``CUDA_VISIBLE_DEVICES``, as Slurm's GRES sets it for the whole job, else 0, 1, ...). Where
Slurm already bound one GPU set per task (``--gpus-per-task``, ``--gpu-bind``), that binding is
kept. Measured with Slurm 22.05: a task of ``srun --gpus-per-task=1`` gets its own id in
``CUDA_VISIBLE_DEVICES`` and ``SLURM_STEP_GPUS`` plus ``SLURMD_TRES_BIND=gpu:per_task:1``, but
``SLURM_GPUS_PER_TASK`` only when ``sbatch`` (not srun) was given ``--gpus-per-task``.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

GPUS_PER_RANK_ENV = "HPC_CURATOR_GPUS_PER_RANK"
LOCAL_RANK_VARS = ("SLURM_LOCALID", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK")


def local_rank(env: MutableMapping[str, str]) -> int | None:
    """This process's index among the ranks of its node, from the launcher's environment."""
    for var in LOCAL_RANK_VARS:
        value = env.get(var, "")
        if value.isdigit():
            return int(value)
    return None


#: ranks on this node, as MPICH's Hydra (and Intel MPI) and Open MPI's launchers say
LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")


def local_size(env: MutableMapping[str, str]) -> int | None:
    """How many ranks run on this node, from the launcher's environment (``None``: unknown,
    e.g. under ``srun``, which gives every task cores of its own)."""
    for var in LOCAL_SIZE_VARS:
        value = env.get(var, "")
        if value.isdigit():
            return int(value)
    return None


def slurm_bound(env: MutableMapping[str, str]) -> bool:
    """Whether Slurm already gave this task its own GPUs (``--gpus-per-task``, ``--gpu-bind``)."""
    if env.get("SLURM_STEP_GPUS") is None:
        return False
    return bool(env.get("SLURM_GPUS_PER_TASK")) or "gpu:" in env.get("SLURMD_TRES_BIND", "")


def bind(
    env: MutableMapping[str, str] | None = None,
    rank: int | None = None,
    per_rank: int | None = None,
) -> list[str] | None:
    """Restrict this rank to its own GPUs (``--gpus-per-rank``); return its device ids.

    ``rank`` overrides the node-local rank (pool worker slots); ``per_rank`` the number of
    GPUs per rank (default: ``HPC_CURATOR_GPUS_PER_RANK`` of ``env``, set by job scripts and
    by the launchers for the processes they start). Returns ``None`` when no
    binding was asked for, or the list of ids this rank sees.

    Raises
    ------
    WorldError
        When the node has fewer devices than its ranks need.
    """
    from hpc_curator.errors import WorldError

    env = os.environ if env is None else env
    asked = str(per_rank) if per_rank is not None else env.get(GPUS_PER_RANK_ENV, "")
    if not asked.isdigit() or int(asked) < 1:
        return None
    n = int(asked)
    inherited = env.get("CUDA_VISIBLE_DEVICES")
    if slurm_bound(env):
        return inherited.split(",") if inherited else []  # srun bound them per task already
    rank = rank if rank is not None else (local_rank(env) or 0)
    devices = [d for d in inherited.split(",") if d] if inherited else None
    if devices is None:
        devices = [str(i) for i in range((rank + 1) * n)]
    mine = devices[rank * n : (rank + 1) * n]
    if len(mine) < n:
        raise WorldError(
            f"local rank {rank} needs {n} GPU(s) but the node offers {len(devices)} "
            f"({','.join(devices) or 'none'})",
            "ask for fewer ranks per node or more GPUs (--gpus-per-node)",
        )
    env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
    return mine
