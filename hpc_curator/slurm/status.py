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


#: Pseudo-state of a job that squeue no longer lists and sacct cannot describe (accounting
#: disabled): it has left the queue, so it is over, but how it ended is unknown.
GONE = "GONE"


def _run_full(cmd: list[str], timeout: float = 20) -> subprocess.CompletedProcess[str] | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _run(cmd: list[str], timeout: float = 20) -> str | None:
    proc = _run_full(cmd, timeout)
    return proc.stdout if proc is not None and proc.returncode == 0 else None


def squeue_row(job_id: str) -> tuple[dict[str, str] | None, bool]:
    """squeue's row of the job, and whether squeue answered that the job is not queued."""
    proc = _run_full(["squeue", "-h", "-j", job_id, "-o", "%T|%N|%M|%r|%D"])
    if proc is None:
        return None, False
    if proc.returncode != 0:
        return None, "Invalid job id" in proc.stderr  # purged from the controller: not queued
    out = proc.stdout
    if not out.strip():
        return None, True  # finished jobs are not listed (squeue shows only live ones)
    state, nodes, elapsed, reason, count = out.strip().splitlines()[0].split("|")
    return {
        "state": state,
        "nodes": nodes,
        "elapsed": elapsed,
        "reason": reason,
        "node_count": count,
    }, False


def squeue_state(job_id: str) -> dict[str, str] | None:
    """``{state, nodes, elapsed, reason}`` from squeue, or ``None`` when not queued."""
    return squeue_row(job_id)[0]


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


def job_info(job_id: str) -> dict[str, str] | None:
    """squeue's row while the job is queued, else sacct's; ``{"state": GONE}`` when squeue
    says it left the queue but sacct cannot tell how it ended; ``None`` if nothing answered."""
    row, not_queued = squeue_row(job_id)
    if row is not None:
        return row
    info = sacct_state(job_id)
    if info is not None:
        return info
    return {"state": GONE} if not_queued else None


def job_state(job_id: str) -> str | None:
    """State name of a job (``RUNNING``, ``COMPLETED``, ``GONE``...); ``None`` if unknown."""
    info = job_info(job_id)
    return info["state"] if info else None


def describe_jobs(job_ids: list[str]) -> list[dict[str, Any]]:
    """State rows for ``job_ids`` (squeue for live jobs, sacct for finished ones)."""
    return [{"job_id": job, **(job_info(job) or {"state": "unknown"})} for job in job_ids]


#: End states after which re-running the run resumes it (no fault of the job's own).
RESUMABLE = ("CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "DEADLINE", GONE, "COMPLETED")


def first_error_lines(paths: list[Any], limit: int = 3) -> list[str]:
    """The first lines that look like an error in the given log files (task 0 first)."""
    keys = ("Error", "error:", "ERROR", "Abort", "abort", "Traceback", "Killed", "FAILED")
    found: list[str] = []
    for path in paths:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if any(k in line for k in keys) and line.strip() not in found:
                found.append(line.strip())
                if len(found) >= limit:
                    return found
    return found


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
