"""elastic backend: N independent local processes claiming chunks (``run --elastic N``).

The job-array mode of :mod:`hpc_curator.engine.tasks` without Slurm: this process begins the attempt
and publishes its claim board, starts ``python -m hpc_curator task`` N times, follows their
journals for progress, passes a stop on as SIGTERM, and ends the attempt itself if no task
did (a task died holding a claim that nobody was left to take over).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from hpc_curator.backends.base import Launch, RunBackend, resolve_n_jobs
from hpc_curator.backends.mpi import result_from_run_dir
from hpc_curator.engine.attempt import Heartbeat
from hpc_curator.engine.signals import StopFlag, stop_on_signals
from hpc_curator.engine.values import LAUNCHER_PID_ENV, PARENT_ENV, OnCommit, RunResult
from hpc_curator.errors import UsageError
from hpc_curator.model import portable
from hpc_curator.store import rundir
from hpc_curator.ui.follow import JournalFollower


def _die_with_parent() -> None:
    """In a task, before exec: SIGTERM when this launcher dies, even by ``kill -9`` (Linux
    ``PR_SET_PDEATHSIG``). The task then commits what it finished and stops, instead of
    working on as an orphan beside a relaunch (whose commits the ledger would prefer)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


class ElasticBackend(RunBackend):
    """``--elastic N``: N processes, no MPI, chunks claimed through the run directory."""

    name = "elastic"
    description = "N independent processes claiming chunks (the job-array mode, locally)"

    def launch(
        self, launch: Launch, *, stop: StopFlag | None = None, on_commit: OnCommit | None = None
    ) -> RunResult:
        from hpc_curator.engine.tasks import begin_elastic, finalize

        if portable.payload(launch.pipeline) is not None:
            raise UsageError(
                "elastic tasks rebuild the pipeline from its spec; this one holds objects a "
                "fresh process cannot import",
                "define the components in a file or module (SPEC file.py:build)",
            )
        n = resolve_n_jobs(launch.n_jobs)
        plan, _ = begin_elastic(
            launch.run_dir, launch.settings, n, "elastic", spec=launch.spec,
            indices=launch.indices,
        )  # fmt: skip
        rd = rundir.RunDir(plan.run_dir)
        env = launch.child_env(
            dict(os.environ, **{PARENT_ENV: "elastic", LAUNCHER_PID_ENV: str(os.getpid())})
        )
        env.pop("HPC_CURATOR_EXPECTED_SIZE", None)
        follower = JournalFollower(rd)
        follower.skip_existing()  # earlier attempts are not this launch's
        cmd = [sys.executable, "-m", "hpc_curator", "task", "--run-dir", plan.run_dir,
               "--attempt", str(plan.attempt)]  # fmt: skip
        with (
            Heartbeat(rd.heartbeat_path(plan.attempt)),
            stop_on_signals(stop or StopFlag()) as flag,
        ):
            procs = [
                subprocess.Popen([*cmd, "--task", str(t)], env=env, preexec_fn=_die_with_parent)
                for t in range(n)
            ]
            signalled = False
            while any(p.poll() is None for p in procs):
                time.sleep(0.2)
                self._feed(follower, plan.attempt, on_commit)
                if flag and not signalled:
                    for p in procs:
                        if p.poll() is None:
                            p.send_signal(signal.SIGTERM)
                    signalled = True
        self._feed(follower, plan.attempt, on_commit)
        codes = [p.returncode for p in procs]
        finalize(plan.run_dir, plan.attempt, plan)  # nothing when a task already did
        died = [t for t, c in enumerate(codes) if c is not None and c < 0]
        if died:
            names = ", ".join(f"{t} ({signal.Signals(-codes[t]).name})" for t in died)
            print(
                f"hpc-curator: elastic task(s) {names} died; their unfinished chunks were "
                "taken over by the others if any was still running",
                file=sys.stderr,
                flush=True,
            )
        what = f"{n} elastic tasks ended with codes {sorted(set(codes))}"
        # the manifest decides: complete despite a dead task (its chunk was redone) is 0
        return result_from_run_dir(rd, 0, what)

    @staticmethod
    def _feed(follower: JournalFollower, attempt: int, on_commit: OnCommit | None) -> None:
        for (a, _), rec in follower.poll():
            if a == attempt and rec.get("t") == "commit" and on_commit is not None:
                on_commit(rec)
