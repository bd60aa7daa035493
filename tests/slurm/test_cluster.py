"""The local Slurm cluster works for real: nodes, sbatch, srun + MPI, submitit, limits, requeue.

Every client call has a timeout and jobs are polled with ``scontrol``/``sacct``; nothing
uses ``sbatch --wait`` (it polls slowly) or an unbounded ``srun`` (it waits for ever for
nodes that never come).
"""

from __future__ import annotations

import collections
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import SlurmCluster

TERMINAL = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}
MPI_WORLD = (
    "import os; from mpi4py import MPI; c = MPI.COMM_WORLD; "
    "print(c.Get_rank(), c.Get_size(), os.environ['SLURMD_NODENAME'], flush=True)"
)


# ---------------------------------------------------------------- helpers


def _check(cluster: SlurmCluster, *cmd: str, timeout: float = 30) -> str:
    res = cluster.run(*cmd, timeout=timeout)
    if res.returncode != 0:
        output = res.stdout + res.stderr
        pytest.fail(f"{' '.join(cmd)} exited {res.returncode}\n{output}\n{cluster.dump()}")
    return res.stdout


def sbatch(cluster: SlurmCluster, script: Path, *args: str) -> str:
    out = _check(cluster, "sbatch", "--parsable", *args, str(script))
    return out.strip().split(";")[0]


def job_state(cluster: SlurmCluster, job_id: str) -> str:
    """The controller's view (immediate); sacct lags behind it a little."""
    res = cluster.run("scontrol", "show", "job", "-o", job_id)
    match = re.search(r"\bJobState=(\S+)", res.stdout)
    return match.group(1) if match else "UNKNOWN"


def wait_for(cluster: SlurmCluster, what: str, predicate, timeout: float, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{cluster.dump()}")
        time.sleep(interval)


def wait_job(cluster: SlurmCluster, job_id: str, timeout: float, states=TERMINAL) -> str:
    def reached() -> str | None:
        state = job_state(cluster, job_id)
        return state if state in states else None

    return wait_for(cluster, f"job {job_id} in {sorted(states)}", reached, timeout)


def sacct_state(cluster: SlurmCluster, job_id: str, timeout: float = 30) -> str:
    def state():
        res = cluster.run("sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id)
        words = res.stdout.split()
        return words[0] if words and words[0] in TERMINAL else None

    return wait_for(cluster, f"sacct to record job {job_id}", state, timeout)


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def srun(cluster: SlurmCluster, *args: str, timeout: float = 120) -> list[str]:
    # --immediate: fail instead of queueing for ever if the nodes are not free
    out = _check(cluster, "srun", "--immediate=60", *args, timeout=timeout)
    return out.split("\n")[:-1]


# ---------------------------------------------------------------- tests


def test_sinfo_shows_all_nodes_idle(slurm_cluster: SlurmCluster) -> None:
    out = _check(slurm_cluster, "sinfo", "-h", "-N", "-p", "debug", "-o", "%N %t %c")
    rows = sorted(line.split() for line in out.splitlines())
    assert rows == [[node, "idle", "4"] for node in slurm_cluster.nodes], slurm_cluster.dump()


def test_sbatch_spreads_tasks_over_all_nodes(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "job.sh", "srun bash -c 'echo \"$SLURMD_NODENAME $SLURM_PROCID\"'\n"
    )
    job_id = sbatch(
        slurm_cluster, script, "--nodes=4", "--ntasks-per-node=2", f"--output={tmp_path}/out-%j.txt"
    )

    assert wait_job(slurm_cluster, job_id, timeout=60) == "COMPLETED", slurm_cluster.dump()
    lines = [line.split() for line in (tmp_path / f"out-{job_id}.txt").read_text().splitlines()]
    assert collections.Counter(node for node, _ in lines) == {
        node: 2 for node in slurm_cluster.nodes
    }
    assert sorted(int(rank) for _, rank in lines) == list(range(8))
    assert sacct_state(slurm_cluster, job_id) == "COMPLETED"


def test_srun_mpi_pmi2_gives_one_world_across_nodes(slurm_cluster: SlurmCluster) -> None:
    lines = srun(slurm_cluster, "--mpi=pmi2", "-N", "4", "-n", "8", sys.executable, "-c", MPI_WORLD)
    ranks = sorted(int(line.split()[0]) for line in lines)
    assert ranks == list(range(8)), lines
    assert {line.split()[1] for line in lines} == {"8"}, lines
    assert {line.split()[2] for line in lines} == set(slurm_cluster.nodes), lines


def test_srun_without_mpi_flag_gives_singletons(slurm_cluster: SlurmCluster) -> None:
    # The pitfall a launcher must avoid: MpiDefault=none and no --mpi -> no PMI, and every
    # task silently becomes rank 0 of a world of size 1. No error anywhere.
    lines = srun(slurm_cluster, "-N", "2", "-n", "4", sys.executable, "-c", MPI_WORLD)
    assert [line.split()[:2] for line in lines] == [["0", "1"]] * 4, lines


def test_submitit_slurm_executor_runs_an_mpi_world(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    assert isinstance(executor._executor, submitit.SlurmExecutor)
    executor.update_parameters(
        slurm_partition="debug",
        nodes=2,
        tasks_per_node=2,
        timeout_min=3,
        slurm_srun_args=["--mpi=pmi2"],
    )

    def world() -> tuple[int, int, str]:  # nested: cloudpickle ships it by value
        import os

        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        return comm.Get_rank(), comm.Get_size(), os.environ["SLURMD_NODENAME"]

    job = executor.submit(world)
    try:
        wait_for(slurm_cluster, f"submitit job {job.job_id}", job.done, timeout=120, interval=0.5)
        results = job.results()
    finally:
        if not job.done():
            job.cancel(check=False)
    assert sorted(rank for rank, _, _ in results) == [0, 1, 2, 3], results
    assert {size for _, size, _ in results} == {4}, results
    assert len({node for _, _, node in results}) == 2, results


HANDLER = """\
import signal, sys, time
log = open(sys.argv[1], "a", buffering=1)
def note(sig, frame):
    log.write(f"{signal.Signals(sig).name} {time.time():.2f}\\n")
for sig in (signal.SIGUSR2, signal.SIGTERM):
    signal.signal(sig, note)
log.write(f"START {time.time():.2f}\\n")
while True:
    time.sleep(0.2)
"""


@pytest.mark.slow
def test_time_limit_sends_usr2_then_times_out(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    # slurmctld checks limits on a 30 s tick (compiled in) and sends USR2@N once <= N+30 s
    # are left: with --time=1 --signal=USR2@50 that is the first tick after the start, 0-30 s
    # in; the kill comes on the first tick after the limit, 60-90 s in. See cluster.sh.
    (tmp_path / "handler.py").write_text(HANDLER)
    signals = tmp_path / "signals.txt"
    script = write_script(
        tmp_path / "job.sh", f"srun -n 1 {sys.executable} {tmp_path}/handler.py {signals}\n"
    )
    t0 = time.time()
    job_id = sbatch(
        slurm_cluster, script, "--time=1", "--signal=USR2@50", f"--output={tmp_path}/out.txt"
    )

    assert wait_job(slurm_cluster, job_id, timeout=150) == "TIMEOUT", slurm_cluster.dump()
    t_end = time.time()
    assert sacct_state(slurm_cluster, job_id) == "TIMEOUT"

    events = [line.split() for line in signals.read_text().splitlines()]
    names = [name for name, _ in events]
    assert names[0] == "START" and "SIGUSR2" in names, events
    assert names.index("SIGUSR2") < names.index("SIGTERM"), events
    start = float(events[0][1])
    usr2 = float(events[names.index("SIGUSR2")][1]) - start
    term = float(events[names.index("SIGTERM")][1]) - start
    print(
        f"\nUSR2 after {usr2:.1f}s, SIGTERM after {term:.1f}s,"
        f" TIMEOUT seen {t_end - t0:.1f}s after submit"
    )
    assert 0 <= usr2 <= 35, events
    assert 58 <= term <= 100, events


RESTARTS = """\
echo "$SLURM_JOB_ID ${SLURM_RESTART_COUNT:-0} $(date +%s.%N)" >> LOG
exec sleep 300
"""


def test_scontrol_requeue_restarts_running_job_under_same_id(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    starts = tmp_path / "starts.txt"
    script = write_script(tmp_path / "job.sh", RESTARTS.replace("LOG", str(starts)))
    job_id = sbatch(slurm_cluster, script, "--time=5", f"--output={tmp_path}/out-%j.txt")
    try:
        wait_for(
            slurm_cluster, "first start", lambda: starts.exists() and starts.read_text(), timeout=60
        )
        t_requeue = time.time()
        _check(slurm_cluster, "scontrol", "requeue", job_id)
        second = wait_for(
            slurm_cluster,
            "restart",
            lambda: len(starts.read_text().splitlines()) >= 2,
            timeout=120,
            interval=0.5,
        )
        assert second
        first, again = (line.split() for line in starts.read_text().splitlines()[:2])
        assert (first[:2], again[:2]) == ([job_id, "0"], [job_id, "1"])  # same id, 1 restart
        restarted_at = again[2]
        assert job_state(slurm_cluster, job_id) == "RUNNING"
        print(
            f"\nrequeued job {job_id} ran again {float(restarted_at) - t_requeue:.1f}s"
            " after scontrol requeue"
        )
    finally:
        slurm_cluster.run("scancel", job_id)


def test_urgent_partition_preempts_and_requeues_debug_job(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    starts = tmp_path / "starts.txt"
    victim = write_script(tmp_path / "victim.sh", RESTARTS.replace("LOG", str(starts)))
    urgent = write_script(tmp_path / "urgent.sh", "sleep 1\n")
    whole = ["--nodes=4", "--ntasks-per-node=4"]
    victim_id = sbatch(slurm_cluster, victim, *whole, "--time=5", f"--output={tmp_path}/v-%j.txt")
    try:
        wait_for(
            slurm_cluster,
            "victim start",
            lambda: starts.exists() and starts.read_text(),
            timeout=60,
        )
        urgent_id = sbatch(
            slurm_cluster, urgent, "-p", "urgent", *whole, f"--output={tmp_path}/u-%j.txt"
        )
        assert wait_job(slurm_cluster, urgent_id, timeout=60) == "COMPLETED", slurm_cluster.dump()
        wait_for(
            slurm_cluster,
            "victim restart",
            lambda: len(starts.read_text().splitlines()) >= 2,
            timeout=120,
            interval=0.5,
        )
        again = starts.read_text().splitlines()[1].split()
        assert again[:2] == [victim_id, "1"]
        assert job_state(slurm_cluster, victim_id) == "RUNNING"
    finally:
        slurm_cluster.run("scancel", victim_id)
