"""Attempt records of a run directory and whether an attempt is still alive.

``D/attempts/NNNN.json`` is created exclusively by the launch that begins attempt ``NNNN``
(job id, host, pid, launcher, code fingerprint) and rewritten atomically when it ends. An
attempt without an end is alive if its evidence says so (:func:`attempt_alive`): its elastic
tasks' heartbeats, its rank 0's pid on this host, its Slurm job, its heartbeat file. A launch
while another attempt is alive is refused (:func:`check_not_busy`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from hpc_curator.errors import RunBusyError
from hpc_curator.runtime.world import hostname
from hpc_curator.store.atomic import atomic_write, create_exclusive
from hpc_curator.store.rundir import RunDir, now_iso

#: A live attempt must touch its heartbeat more often than this (seconds).
HEARTBEAT_INTERVAL = 15.0
STALE_AFTER = 180.0


def list_attempts(rd: RunDir) -> list[dict[str, Any]]:
    """Every attempt record, oldest first."""
    out = []
    for p in rd.attempt_records():
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return out


def attempt_alive(rd: RunDir, rec: dict[str, Any], now: float | None = None) -> bool:
    """Whether an attempt without an end record is still running.

    Evidence, strongest first: the attempt ended; its rank 0 PID on this host; the attempt
    belongs to the Slurm job we are running in (so it was requeued and its old incarnation is
    gone); the Slurm job's state in ``squeue``; finally the heartbeat's age.
    """
    if rec.get("ended"):
        return False
    if live_tasks(rd, rec):  # elastic tasks outlive a launcher killed with kill -9
        return True
    if rec.get("host") == hostname() and rec.get("pid") is not None:
        if not _pid_running(rec.get("pid")):
            return False
        if not rec.get("job_id"):
            return True
    job = rec.get("job_id")
    if job:
        from hpc_curator.slurm.env import slurm_env

        if job == slurm_env().job_id and rec.get("host") != hostname():
            return False
        from hpc_curator.slurm.status import job_state

        state = job_state(str(job))
        if state is not None:
            return state in ("RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING")
    try:
        age = (now or time.time()) - rd.heartbeat_path(rec["attempt"]).stat().st_mtime
    except FileNotFoundError:
        return False
    return age < STALE_AFTER


def live_tasks(rd: RunDir, rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The tasks of an elastic attempt (``launcher`` elastic or array) whose heartbeat is
    fresh (:mod:`hpc_curator.engine.beats`); ``[]`` for other attempts."""
    if rec.get("launcher") not in ("elastic", "array") or "attempt" not in rec:
        return []
    from hpc_curator.engine import beats

    return beats.live_tasks(rd.board(int(rec["attempt"])))


def _pid_running(pid: Any) -> bool:
    """Whether ``pid`` is a live process on this host (zombies count as dead)."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def check_not_busy(rd: RunDir) -> list[dict[str, Any]]:
    """Raise :class:`RunBusyError` if an attempt is alive; otherwise return every attempt."""
    attempts = list_attempts(rd)
    for rec in attempts:
        if attempt_alive(rd, rec):
            age = time.time() - rec.get("started_ts", time.time())
            tasks = live_tasks(rd, rec)
            if tasks:
                who = ", ".join(
                    f"{t['task']} (host {t.get('host')}, pid {t.get('pid')})" for t in tasks[:8]
                )
                more = f" and {len(tasks) - 8} more" if len(tasks) > 8 else ""
                raise RunBusyError(
                    f"run dir {rd.path} is in use by attempt {rec['attempt']}: elastic task(s) "
                    f"{who}{more} still working (heartbeat {min(t['age'] for t in tasks):.0f}s "
                    "ago)",
                    "wait for them to finish, stop them, or cancel the run (hpc-curate cancel)",
                )
            raise RunBusyError(
                f"run dir {rd.path} is in use by attempt {rec['attempt']} "
                f"(job {rec.get('job_id') or '-'}, host {rec.get('host')}, "
                f"pid {rec.get('pid')}, started {age:.0f}s ago)",
                "wait for it, or cancel it (hpc-curate cancel) before relaunching",
            )
    return attempts


def start_attempt(rd: RunDir, identity: dict[str, Any], launcher: str) -> int:
    """Create the next attempt record exclusively and return its number.

    Raises
    ------
    RunBusyError
        When an earlier attempt is still alive (same host and PID alive, or fresh heartbeat).
    """
    for _ in range(100):
        attempts = check_not_busy(rd)
        number = max((int(r["attempt"]) for r in attempts), default=0) + 1
        rec = {
            "attempt": number,
            "launcher": launcher,
            "started": now_iso(),
            "started_ts": time.time(),
            **identity,
        }
        if create_exclusive(rd.attempt_path(number), json.dumps(rec, indent=2)):
            rd.heartbeat_path(number).touch()
            return number
    raise RunBusyError(f"could not claim an attempt number in {rd.attempts_dir}")


def update_attempt(rd: RunDir, attempt: int, **fields: Any) -> None:
    """Add ``fields`` to an attempt record (a job array's id, known once it is submitted)."""
    path = rd.attempt_path(attempt)
    rec = json.loads(path.read_text())
    rec.update(fields)
    atomic_write(path, json.dumps(rec, indent=2, default=repr))


def end_attempt(rd: RunDir, attempt: int, **fields: Any) -> None:
    """Record how an attempt ended (reason, counts) by rewriting its record atomically."""
    path = rd.attempt_path(attempt)
    rec = json.loads(path.read_text())
    rec.update(fields, ended=now_iso(), ended_ts=time.time())
    atomic_write(path, json.dumps(rec, indent=2, default=repr))
    try:
        rd.heartbeat_path(attempt).unlink()
    except FileNotFoundError:
        pass
