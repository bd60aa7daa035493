"""A fake Slurm 22.05 on ``PATH`` for the fast test tier (no cluster needed).

``bin/`` holds ``sbatch``, ``squeue``, ``sacct``, ``scancel``, ``scontrol`` and ``srun`` (submitit
refuses to submit without an ``srun`` on ``PATH``); :mod:`.commands` implements them. A test
points ``PATH`` and ``FAKE_SLURM_DIR`` at an instance of :class:`FakeSlurm` (``fake.env``), runs
the real CLI, then reads what the commands were asked (:meth:`FakeSlurm.calls`), moves jobs
between states (:meth:`FakeSlurm.set_state`) or runs a submitted job the way ``slurmd`` and
``srun`` would (:meth:`FakeSlurm.run_job`)::

    fake = FakeSlurm(tmp_path / "slurm")
    cli("submit", EXAMPLE, "--run-dir", str(d), env=fake.env)
    job = fake.last_job()
    fake.run_job(job)          # the job script, srun, and the real RankJob in every task
    fake.set_state(job, "FAILED", exit_code="1:0")
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.fake_slurm import commands

BIN = Path(__file__).resolve().parent / "bin"
COMMANDS = Path(commands.__file__).resolve()
#: The states :meth:`FakeSlurm.set_state` accepts (Slurm 22.05 job state names).
STATES = (
    "PENDING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
)


class FakeSlurm:
    """One fake cluster: its state directory, environment and job-table controls.

    Parameters
    ----------
    root
        State directory (``calls.jsonl``, ``jobs.json``, saved job scripts).
    auto_run
        Let ``sbatch`` start every job it accepts in the background (as a cluster with
        free nodes would); :meth:`close` stops whatever is left of them.
    accounting
        ``False``: a cluster without slurmdbd, where every ``sacct`` fails.
    """

    def __init__(self, root: Path, *, auto_run: bool = False, accounting: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if not accounting:
            (self.root / "no_accounting").touch()
        self.env: dict[str, str] = {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            commands.STATE_DIR_ENV: str(self.root),
            commands.AUTO_RUN_ENV: "1" if auto_run else "0",
        }
        self._started: list[subprocess.Popen[bytes]] = []

    # -- reading ----------------------------------------------------------------------------
    def calls(self, cmd: str | None = None) -> list[dict[str, Any]]:
        """Every recorded call (``{"cmd", "argv", "cwd", "env", ...}``), oldest first."""
        path = self.root / "calls.jsonl"
        if not path.exists():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in rows if cmd is None or r["cmd"] == cmd]

    def jobs(self) -> dict[str, dict[str, Any]]:
        """The job table: job id -> record."""
        return dict(commands.read_table(self.root)["jobs"])

    def job(self, job_id: str) -> dict[str, Any]:
        """One job's record."""
        return self.jobs()[str(job_id)]

    def last_job(self) -> str:
        """The id of the latest submitted job."""
        jobs = self.jobs()
        assert jobs, "no job was submitted"
        return max(jobs, key=int)

    def script(self, job_id: str) -> str:
        """The script text sbatch was handed for ``job_id`` (as it was at submission)."""
        return Path(self.job(job_id)["script"]).read_text()

    # -- controlling ------------------------------------------------------------------------
    def set_state(
        self, job_id: str, state: str, exit_code: str = "0:0", reason: str | None = None
    ) -> None:
        """Move ``job_id`` to ``state`` (with sacct's ``ExitCode``, e.g. ``"1:0"``)."""
        assert state in STATES, f"{state} is not a Slurm job state"
        now = time.time()
        with commands.locked_table(self.root) as table:
            job = table["jobs"][str(job_id)]
            job["state"] = state
            job["exit_code"] = exit_code
            if state == "PENDING":
                job.update(start_time=None, end_time=None, node_list=None)
                job["reason"] = reason or "Priority"
                return
            job["node_list"] = job["node_list"] or commands.node_list(job["nodes"])
            job["start_time"] = job["start_time"] or now
            job["reason"] = reason or "None"
            if state in ("RUNNING", "COMPLETING", "SUSPENDED"):
                job["end_time"] = None
            else:
                job["end_time"] = job["end_time"] or now
            if state == "CANCELLED":
                job["cancelled_by"] = os.getuid()

    def run(self, cmd: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one fake client command (``scancel``, ``squeue``, ...) against this cluster."""
        return subprocess.run(
            [str(BIN / cmd), *args],
            env=dict(os.environ, **self.env),
            capture_output=True,
            text=True,
            timeout=30,
        )

    def purge(self, job_id: str) -> None:
        """Forget a finished job in the controller (``MinJobAge`` passed): squeue no longer
        knows it, sacct still does."""
        with commands.locked_table(self.root) as table:
            table["jobs"][str(job_id)]["purged"] = True

    def fail_next_sbatch(self, message: str = "Batch job submission failed") -> None:
        """Make the next ``sbatch`` refuse the job with ``sbatch: error: MESSAGE``."""
        (self.root / "sbatch_fail").write_text(message + "\n")

    def run_job(self, job_id: str, timeout: float = 60) -> int:
        """Run the job's script to its end as slurmd would; return the script's exit code.

        The job goes RUNNING, then COMPLETED (exit 0) or FAILED (``<code>:0``); a job that was
        cancelled or requeued meanwhile keeps that state.
        """
        proc = self.start_job(job_id, timeout=timeout)
        try:
            proc.wait(timeout=timeout + commands.KILL_WAIT_S + 10)
        finally:
            self._stop(proc)
        return self._script_exit(job_id)

    def start_job(self, job_id: str, timeout: float = 60) -> subprocess.Popen[bytes]:
        """Start running the job in the background (see :meth:`run_job`); return the runner."""
        log = open(self.root / f"runner-{job_id}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, str(COMMANDS), "run-job", str(job_id), str(timeout)],
            env=dict(os.environ, **self.env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self._started.append(proc)
        return proc

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout: float = 30) -> str:
        """Poll the table until ``job_id`` is in one of ``states``; return the state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.job(job_id)["state"]
            if state in states:
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {state} after {timeout}s")
            time.sleep(0.05)

    def runner_log(self, job_id: str) -> str:
        """What the job runner printed (errors of the fake itself)."""
        path = self.root / f"runner-{job_id}.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        """Stop every runner and job process this fake started that is still alive."""
        for proc in self._started:
            self._stop(proc)
        for job in self.jobs().values():
            for pid in (job.get("pgid"), job.get("runner_pid")):
                if pid and _started_here(int(pid), self.root):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(int(pid), signal.SIGKILL)

    def _script_exit(self, job_id: str) -> int:
        for step in self.job(job_id)["steps"]:
            if step["id"] == "batch" and step["exit_code"]:
                code, _, sig = step["exit_code"].partition(":")
                return int(code) or (128 + int(sig) if sig and sig != "0" else 0)
        raise AssertionError(f"job {job_id} did not run:\n{self.runner_log(job_id)}")

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _started_here(pid: int, root: Path) -> bool:
    """Whether ``pid`` still is a job runner or job script of the fake cluster at ``root``."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{commands.STATE_DIR_ENV}={root}".encode() in environ
