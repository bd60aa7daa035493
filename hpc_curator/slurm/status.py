"""Slurm job state (squeue, then sacct) for the jobs recorded in a run dir; cancel.

All scheduler calls have timeouts and degrade to ``None``/"unknown" when Slurm's client tools
are missing or the controller does not answer, so ``status`` still shows journal progress.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

ACTIVE = (
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
)


def _run(cmd: list[str], timeout: float = 20) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def squeue_state(job_id: str) -> dict[str, str] | None:
    """``{state, nodes, elapsed, reason}`` from squeue, or ``None`` when not queued."""
    out = _run(["squeue", "-h", "-j", job_id, "-o", "%T|%N|%M|%r|%D"])
    if not out or not out.strip():
        return None
    state, nodes, elapsed, reason, count = out.strip().splitlines()[0].split("|")
    return {
        "state": state,
        "nodes": nodes,
        "elapsed": elapsed,
        "reason": reason,
        "node_count": count,
    }


def sacct_state(job_id: str) -> dict[str, str] | None:
    """``{state, nodes, elapsed, exit_code, restarts}`` of the job allocation from sacct."""
    out = _run(
        ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "JobID,State,NodeList,Elapsed,ExitCode"]
    )
    if not out:
        return None
    for line in out.strip().splitlines():
        parts = line.split("|")
        if len(parts) >= 5 and parts[0] == job_id:
            return {
                "state": parts[1].split()[0],
                "nodes": parts[2],
                "elapsed": parts[3],
                "exit_code": parts[4],
            }
    return None


def job_state(job_id: str) -> str | None:
    """Current state name of a job (``RUNNING``, ``COMPLETED``, ...), ``None`` if unknown."""
    info = squeue_state(job_id) or sacct_state(job_id)
    return info["state"] if info else None


def describe_jobs(job_ids: list[str]) -> list[dict[str, Any]]:
    """State rows for ``job_ids`` (squeue for live jobs, sacct for finished ones)."""
    rows = []
    for job in job_ids:
        info = squeue_state(job) or sacct_state(job) or {"state": "unknown"}
        rows.append({"job_id": job, **info})
    return rows


def cancel(job_ids: list[str]) -> list[str]:
    """``scancel`` the jobs that are still active; return those cancelled."""
    from hpc_curator.errors import LaunchError

    if shutil.which("scancel") is None:
        raise LaunchError("scancel is not on PATH (no Slurm here)")
    active = [j for j in job_ids if (job_state(j) or "") in ACTIVE]
    if active:
        proc = subprocess.run(["scancel", *active], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise LaunchError(f"scancel failed: {proc.stderr.strip()}")
    return active
