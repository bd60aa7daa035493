"""hpc-curate submit against a real 4-node Slurm cluster (tests/slurm/cluster.sh).

Every scheduler interaction has a timeout; nothing uses ``sbatch --wait``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hpc_curator.slurm.stale_shm import SHM_DIR, segment_names
from tests.conftest import (
    FIXTURE_PIPELINES,
    assert_stats_equal,
    cli,
    manifest_rows,
    read_manifest,
    stats,
)

SPEC = f"{FIXTURE_PIPELINES}:stats"


def wait_until(
    predicate: Any, timeout: float, what: str, cluster: Any, run_dir: Path | None = None
) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{cluster.dump(run_dir)}")


def job_id_of(proc: subprocess.CompletedProcess[str]) -> str:
    for line in proc.stdout.splitlines():
        if line.startswith("Submitted job "):
            return line.split()[2].rstrip(":")
    raise AssertionError(proc.stdout + proc.stderr)


FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")


def finished(cluster: Any, job: str) -> str | None:
    """The job's final state once it has one (so waits end early on failure)."""
    s = state(cluster, job)
    return s if s.startswith(FINAL) else None


def state(cluster: Any, job: str) -> str:
    out = cluster.run("squeue", "-h", "-j", job, "-o", "%T").stdout.strip()
    if out:
        return out
    acct = cluster.run("sacct", "-n", "-X", "-P", "-j", job, "-o", "State").stdout.strip()
    return acct.split()[0] if acct else "UNKNOWN"


def journal_count(d: Path) -> int:
    n = 0
    for path in (d / "journal").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if '"t":"commit"' in line:
                n += len(json.loads(line)["idx"])
    return n


def submit_slow_run(d: Path, nodes: int, tasks: int, cluster: Any) -> str:
    """Submit 160 slow indices (committing every 2) and wait for the first commits."""
    proc = cli(
        "submit",
        SPEC,
        "-p",
        "n=160",
        "-p",
        "sleep=0.15",
        "--run-dir",
        str(d),
        "--nodes",
        str(nodes),
        "--ntasks-per-node",
        str(tasks),
        "--commit-every",
        "2",
        "--time",
        "10",
    )
    job = job_id_of(proc)
    wait_until(lambda: journal_count(d) >= 8 * nodes * tasks // 2, 90, "first commits", cluster, d)
    return job


def sbatch(cluster: Any, path: Path) -> str:
    """Submit a job script with plain ``sbatch``; return the job id."""
    out = cluster.run("sbatch", str(path))
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1]


def sbatch_script_job(cluster: Any, d: Path, tmp_path: Path, *args: str) -> str:
    """Render ``hpc-curate sbatch-script`` for 2 nodes x 2 tasks, submit it, return the job id."""
    script = cli(
        "sbatch-script",
        SPEC,
        *args,
        "--run-dir",
        str(d),
        "--nodes",
        "2",
        "--ntasks-per-node",
        "2",
        "--python",
        sys.executable,
        check=True,
    ).stdout
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    return sbatch(cluster, path)


def wait_complete(d: Path, cluster: Any) -> dict:
    """Wait until the run's manifest says complete; return it."""
    wait_until(
        lambda: (d / "manifest.json").exists() and read_manifest(d)["status"] == "complete",
        180,
        "completion",
        cluster,
        d,
    )
    return read_manifest(d)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("ref") / "run"
    cli("run", SPEC, "-p", "n=160", "--run-dir", str(d), "-q", check=True)
    return stats(d)


def test_submit_4_nodes_x_2_tasks_runs_8_ranks(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    d = tmp_path / "run"
    proc = cli(
        "submit",
        SPEC,
        "-p",
        "n=160",
        "--run-dir",
        str(d),
        "--nodes",
        "4",
        "--ntasks-per-node",
        "2",
        "--time",
        "5",
        "--wait",
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + slurm_cluster.dump(d)
    doc = read_manifest(d)
    assert doc["status"] == "complete" and doc["world_size"] == 8
    assert {r["node"] for r in doc["ranks"]} == {"n1", "n2", "n3", "n4"}
    assert sorted(r["rank"] for r in doc["ranks"]) == list(range(8))
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(160))
    assert {r["job_id"] for r in rows} == {job_id_of(proc)}
    assert_stats_equal(stats(d), reference)
    # the script sbatch ran is the one --dry-run prints
    dry = cli(
        "submit",
        SPEC,
        "-p",
        "n=160",
        "--run-dir",
        str(d),
        "--nodes",
        "4",
        "--ntasks-per-node",
        "2",
        "--time",
        "5",
        "--dry-run",
        check=True,
    )
    submitted = (d / "slurm" / "logs" / f"{job_id_of(proc)}_submission.sh").read_text()
    assert dry.stdout == submitted


def test_mpi_none_fails_fast_with_the_singleton_message(slurm_cluster: Any, tmp_path: Path) -> None:
    d = tmp_path / "run"
    start = time.time()
    proc = cli(
        "submit",
        SPEC,
        "-p",
        "n=50",
        "--run-dir",
        str(d),
        "--nodes",
        "2",
        "--ntasks-per-node",
        "2",
        "--mpi",
        "none",
        "--wait",
        timeout=120,
    )
    assert proc.returncode != 0
    assert time.time() - start < 60
    logs = "".join(p.read_text() for p in (d / "slurm" / "logs").glob("*_log.err"))
    assert "every rank is an MPI singleton" in logs and "--mpi pmi2" in logs
    assert not list((d / "journal").glob("*.jsonl"))  # no index ran


def test_time_limit_requeues_and_completes(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    """--time 1 with slow indices: USR2 arrives, ranks commit, rank 0 requeues, job finishes.

    Slurm sends the warning on its first 30-s tick once <= delay + 30 s remain, so with
    --time 1 each incarnation gets SIGUSR2 0-30 s after it starts (tests/slurm/cluster.sh).
    """
    d = tmp_path / "run"
    proc = cli(
        "submit",
        SPEC,
        "-p",
        "n=120",
        "-p",
        "sleep=1.2",
        "--run-dir",
        str(d),
        "--nodes",
        "2",
        "--ntasks-per-node",
        "2",
        "--time",
        "1",
        "--signal-delay",
        "50",
        "--max-requeues",
        "12",
        "--commit-every",
        "4",
        "--wait",
        timeout=480,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + slurm_cluster.dump(d)
    doc = read_manifest(d)
    assert doc["status"] == "complete"
    attempts = doc["attempts"]
    assert len(attempts) >= 2
    assert attempts[0]["reason"] == "SIGUSR2"
    assert {a["job_id"] for a in attempts} == {job_id_of(proc)}  # same job, requeued
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(120))
    assert stats(d)["u"]["count"] == 120 * 64


def test_pre_timeout_signal_commits_and_requeues_once(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    """The USR2 path without waiting for Slurm's tick: scancel --signal=USR2 to the steps."""
    d = tmp_path / "run"
    job = submit_slow_run(d, 2, 2, slurm_cluster)
    assert slurm_cluster.run("scancel", "--signal=USR2", job).returncode == 0
    attempts = wait_complete(d, slurm_cluster)["attempts"]
    assert [a["reason"] for a in attempts] == ["SIGUSR2", "done"]
    assert attempts[0]["counts"]["pending"] > 0
    assert [r["index"] for r in manifest_rows(d)] == list(range(160))
    assert_stats_equal(stats(d), reference)


def test_scontrol_requeue_mid_run_resumes(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    """The requeued run starts clean even when the killed run left MPI shared memory behind.

    Between the two runs this test plants garbage under the names MPICH gives this job step's
    node-local segments -- what a run SIGKILLed before MPI_Finalize leaves, and what made the
    next run's MPI_Init hang or abort (hpc_curator/slurm/stale_shm.py).
    """
    d = tmp_path / "run"
    job = submit_slow_run(d, 2, 2, slurm_cluster)
    assert slurm_cluster.run("scontrol", "requeue", job).returncode == 0
    wait_until(lambda: state(slurm_cluster, job) == "PENDING", 60, "requeue", slurm_cluster, d)
    planted = [SHM_DIR / name for node in ("0", "1") for name in segment_names(job, "0", node)]
    for path in planted:
        path.write_bytes(b"\xff" * (1 << 20))
    try:
        assert len(wait_complete(d, slurm_cluster)["attempts"]) >= 2
        assert [r["index"] for r in manifest_rows(d)] == list(range(160))
        assert_stats_equal(stats(d), reference)
        logs = "".join(p.read_text() for p in (d / "slurm" / "logs").glob(f"{job}_*_log.err"))
        assert "removed MPI shared memory left by this job's previous run" in logs
    finally:
        for path in planted:
            path.unlink(missing_ok=True)


def test_cancel_then_resume_on_fewer_nodes(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    d = tmp_path / "run"
    job = submit_slow_run(d, 4, 1, slurm_cluster)
    status = cli("status", str(d), "--json", check=True)
    doc = json.loads(status.stdout)
    assert doc["jobs"][0]["state"] == "RUNNING" and doc["live"]
    assert len(doc["rank_progress"]) == 4
    out = cli("cancel", str(d), check=True)
    assert f"cancelled {job}" in out.stdout
    wait_until(
        lambda: state(slurm_cluster, job).startswith("CANCELLED"), 60, "cancel", slurm_cluster
    )
    done_before = journal_count(d)
    assert 0 < done_before < 160
    resumed = cli("resume", str(d), "--nodes", "2", "--wait", timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr + slurm_cluster.dump(d)
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(160))  # no index done twice
    assert journal_count(d) == 160
    assert read_manifest(d)["world_size"] == 2
    assert_stats_equal(stats(d), reference)


def test_failed_retry_and_logs_against_live_jobs(slurm_cluster: Any, tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = cli(
        "submit",
        SPEC,
        "-p",
        "n=40",
        "-p",
        "fail=5,22",
        "--run-dir",
        str(d),
        "--nodes",
        "2",
        "--ntasks-per-node",
        "2",
        "--wait",
        timeout=180,
    )
    assert proc.returncode == 1
    assert "38/40 ok, 2 failed" in proc.stderr
    failed = cli("failed", str(d))
    assert failed.returncode == 1
    assert "index 5" in failed.stdout and "index 22" in failed.stdout
    assert "node n" in failed.stdout and "RuntimeError" in failed.stdout
    logs = cli("logs", str(d), "--rank", "1", check=True)
    assert "_1_log" in logs.stdout
    retry = cli("retry", str(d), "--wait", timeout=180)
    assert retry.returncode == 1  # the same pipeline fails the same indices again
    rows = manifest_rows(d)
    assert sorted(r["index"] for r in rows if r["attempt"] == 2) == [5, 22]
    assert len(rows) == 40


def test_sbatch_script_and_plain_sbatch(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    d = tmp_path / "run"
    job = sbatch_script_job(slurm_cluster, d, tmp_path, "-p", "n=160")
    final = wait_until(lambda: finished(slurm_cluster, job), 120, "job", slurm_cluster)
    assert final == "COMPLETED", slurm_cluster.dump(d)
    doc = read_manifest(d)
    assert doc["status"] == "complete"
    # the MPICH wheel (ch4:ucx ofi) under pmi2: the ranks asked for OFI (short PMI lines)
    assert {a["mpi"].get("netmod") for a in doc["attempts"]} == {"ofi"}, doc["attempts"]
    assert_stats_equal(stats(d), reference)


def test_hand_written_sbatch_calling_the_rank_program(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    d = tmp_path / "run"
    path = tmp_path / "mine.sbatch"
    path.write_text(
        "#!/bin/bash\n"
        "#SBATCH --nodes=3 --ntasks-per-node=1 --time=5\n"
        f"#SBATCH --output={tmp_path}/out-%j.txt\n"
        f"srun --mpi=pmi2 {sys.executable} -m hpc_curator rank --spec {SPEC} -p n=160 "
        f"--run-dir {d}\n"
    )
    job = sbatch(slurm_cluster, path)
    final = wait_until(lambda: finished(slurm_cluster, job), 120, "job", slurm_cluster)
    assert final == "COMPLETED", slurm_cluster.dump(d)
    doc = read_manifest(d)
    assert doc["world_size"] == 3 and doc["status"] == "complete"
    assert {r["node"] for r in doc["ranks"]} == {"n1", "n2", "n3"}
    assert_stats_equal(stats(d), reference)


def test_sbatch_script_job_requeues_itself_after_srun(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    """The standalone template requeues too: rank 0 asks, the lines after srun requeue."""
    d = tmp_path / "run"
    slow = ("-p", "n=160", "-p", "sleep=0.15", "--commit-every", "2", "--time", "10")
    job = sbatch_script_job(slurm_cluster, d, tmp_path, *slow)
    wait_until(lambda: journal_count(d) >= 16, 90, "first commits", slurm_cluster, d)
    assert slurm_cluster.run("scancel", "--signal=USR2", job).returncode == 0
    attempts = wait_complete(d, slurm_cluster)["attempts"]
    assert [a["reason"] for a in attempts] == ["SIGUSR2", "done"]
    assert {a["job_id"] for a in attempts} == {job}  # requeued, not resubmitted
    assert not list((d / "slurm").glob("requeue-*"))
    assert [r["index"] for r in manifest_rows(d)] == list(range(160))
    assert_stats_equal(stats(d), reference)
