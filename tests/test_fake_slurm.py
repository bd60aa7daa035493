"""The fast Slurm tier: the real CLI and RankJob against a fake Slurm 22.05 on PATH.

``tests/fake_slurm`` puts ``sbatch``/``squeue``/``sacct``/``scancel``/``scontrol``/``srun`` on
``PATH``; they record every call and keep a small job table. The tests drive the real
``submit``, ``status``, ``logs``, ``cancel`` and ``resume`` code paths, and run submitted jobs
the way ``slurmd`` + ``srun`` would (the rendered script under ``bash``, the submitit payload
in each task with the step's ``SLURM_*`` variables), so the real :class:`RankJob` runs. No
cluster needed; ``tests/slurm`` stays the real 4-node tier.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLE, FIXTURE_PIPELINES, cli, manifest_rows, read_manifest, stats
from tests.fake_slurm import BIN, FakeSlurm

pytestmark = pytest.mark.timeout(50)

SMALL = ("-p", "n=16", "-p", "shape=8x8x4")
SLOW = f"{FIXTURE_PIPELINES}:stats"
#: What an enclosing allocation leaves in the environment of a login shell inside it.
INHERITED = {
    "SLURM_JOB_ID": "424242",
    "SLURM_JOBID": "424242",
    "SLURM_NTASKS": "8",
    "SLURM_NNODES": "2",
    "SLURM_STEP_ID": "0",
    "SLURM_CPUS_PER_TASK": "7",
    "SRUN_CPUS_PER_TASK": "7",
    "SLURMD_NODENAME": "outer-node",
    "SUBMITIT_EXECUTOR": "slurm",
}


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSlurm]:
    """A fresh fake cluster; every process it started is stopped afterwards."""
    cluster = FakeSlurm(tmp_path / "fake-slurm")
    try:
        yield cluster
    finally:
        cluster.close()


def submit(
    fake: FakeSlurm, d: Path, *args: str, env: dict[str, str] | None = None, spec: str = EXAMPLE
) -> str:
    """``hpc-curate submit SPEC --run-dir D ARGS`` (cwd: D's parent); return the job id."""
    proc = cli(
        "submit", spec, "--run-dir", str(d), *args, cwd=d.parent, env={**fake.env, **(env or {})}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = fake.last_job()
    assert f"Submitted job {job}:" in proc.stdout
    return job


def status(fake: FakeSlurm, d: Path) -> dict[str, Any]:
    """``hpc-curate status D --json``."""
    return json.loads(cli("status", str(d), "--json", env=fake.env, check=True).stdout)


def journal_commits(d: Path) -> int:
    """Indices committed in the journals so far."""
    done = 0
    for path in (d / "journal").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("t") == "commit":
                done += len(rec["idx"])
    return done


def wait_for_commits(d: Path, at_least: int, timeout: float = 20) -> int:
    """Poll the journals until ``at_least`` indices are committed."""
    deadline = time.monotonic() + timeout
    while (done := journal_commits(d)) < at_least:
        assert time.monotonic() < deadline, f"only {done} indices committed after {timeout}s"
        time.sleep(0.05)
    return done


def no_slurm_path() -> str:
    """``PATH`` without the fake and without any directory holding a real ``sbatch``."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    keep = [p for p in dirs if p and Path(p) != BIN and not (Path(p) / "sbatch").exists()]
    return os.pathsep.join(keep)


def test_submit_records_the_script_sbatch_got_and_scrubs_the_allocation_env(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    d = tmp_path / "run"
    leaked = {**INHERITED, "SLURM_CONF": "/etc/other-cluster/slurm.conf", "SBATCH_QOS": "low"}
    opts = ("--nodes", "1", "--ntasks-per-node", "1", "--time", "10", "--partition", "debug")
    job = submit(fake, d, *SMALL, *opts, env=leaked)

    (call,) = fake.calls("sbatch")
    seen = call["env"]
    for name in INHERITED:
        assert name not in seen, f"{name} leaked into sbatch's environment"
    assert seen["SLURM_CONF"] == "/etc/other-cluster/slurm.conf"  # which cluster: kept
    assert seen["SBATCH_QOS"] == "low"  # the user's sbatch defaults: kept

    record = json.loads((d / "slurm" / "submissions" / f"{job}.json").read_text())
    assert record["job_id"] == job
    assert record["options"]["nodes"] == 1 and record["options"]["time"] == "10"
    script = fake.script(job)
    assert Path(record["script"]).read_text() == script  # submitit's copy is what sbatch read
    logs = d / "slurm" / "logs"
    for line in (
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --time=10",
        "#SBATCH --partition=debug",
        "#SBATCH --signal=USR2@90",
        "#SBATCH --requeue",
        f"#SBATCH --output={logs}/%j_0_log.out",
        f"#SBATCH --error={logs}/%j_0_log.err",
        "export HPC_CURATOR_EXPECTED_SIZE=1",
        "export SUBMITIT_EXECUTOR=slurm",
    ):
        assert line in script.splitlines(), line
    srun = f"srun --unbuffered --mpi=pmi2 --kill-on-bad-exit=1 --output {logs}/%j_%t_log.out"
    payload = f"{sys.executable} -u -m submitit.core._submit {logs}"
    (srun_line,) = [ln for ln in script.splitlines() if ln.startswith("srun ")]
    assert srun_line.startswith(srun) and srun_line.endswith(payload)
    assert fake.job(job)["options"]["nodes"] == "1"  # the fake's sbatch parsed every line

    dry = cli("submit", EXAMPLE, "--run-dir", str(d), *SMALL, *opts, "--dry-run", env=fake.env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == script  # --dry-run shows exactly what is submitted
    assert len(fake.calls("sbatch")) == 1  # and submits nothing


def test_status_reports_each_scheduler_state(fake: FakeSlurm, tmp_path: Path) -> None:
    d = tmp_path / "run"
    job = submit(fake, d, *SMALL)
    doc = status(fake, d)
    (row,) = doc["jobs"]
    assert row == {
        "job_id": job,
        "state": "PENDING",
        "nodes": "",
        "elapsed": "0:00",
        "reason": "Priority",
        "node_count": "1",
    }
    squeue = fake.calls("squeue")[-1]["argv"]
    assert squeue[:3] == ["-h", "-j", job]
    fake.set_state(job, "RUNNING")
    row = status(fake, d)["jobs"][0]
    assert (row["state"], row["nodes"], row["reason"]) == ("RUNNING", "fake1", "None")
    for state, code in (
        ("COMPLETED", "0:0"),
        ("FAILED", "1:0"),
        ("CANCELLED", "0:15"),
        ("TIMEOUT", "0:0"),
        ("OUT_OF_MEMORY", "0:125"),
    ):
        fake.set_state(job, state, exit_code=code)
        row = status(fake, d)["jobs"][0]
        assert (row["state"], row["exit_code"]) == (state, code), row  # sacct, "CANCELLED by N"
        assert row["nodes"] == "fake1" and row["elapsed"].count(":") == 2
    sacct = fake.calls("sacct")[-1]["argv"]
    assert sacct[:5] == ["-n", "-X", "-P", "-j", job]
    fake.purge(job)  # MinJobAge passed: squeue says "Invalid job id", sacct still knows it
    assert status(fake, d)["jobs"][0]["state"] == "OUT_OF_MEMORY"
    assert doc["counts"] == {"total": 16, "ok": 0, "failed": 0, "pending": 16}

    gone = cli("status", str(d), "--json", env={"PATH": no_slurm_path()})
    assert gone.returncode == 0, gone.stderr  # no Slurm tools: journal progress still shown
    assert json.loads(gone.stdout)["jobs"] == [{"job_id": job, "state": "unknown"}]


def test_the_submitted_rank_job_runs_as_a_slurm_task_and_completes(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    d = tmp_path / "run"
    job = submit(fake, d, *SMALL)
    assert cli("logs", str(d), env=fake.env).returncode != 0  # pending: no log yet

    assert fake.run_job(job) == 0, fake.runner_log(job)
    assert fake.job(job)["state"] == "COMPLETED"
    (step,) = [s for s in fake.job(job)["steps"] if s["id"] == "0"]
    assert step["ntasks"] == 1 and step["argv"][-3:] == [
        "-m",
        "submitit.core._submit",
        str(d / "slurm" / "logs"),
    ]

    doc = json.loads(cli("manifest", str(d), "--json", env=fake.env, check=True).stdout)
    assert doc["status"] == "complete"
    assert doc["counts"] == {"total": 16, "ok": 16, "failed": 0, "pending": 0}
    (attempt,) = doc["attempts"]
    assert (attempt["launcher"], attempt["job_id"], attempt["reason"]) == ("slurm", job, "done")
    (rank,) = doc["ranks"]
    assert (rank["node"], rank["job_id"], rank["step_id"], rank["size"]) == ("fake1", job, "0", 1)
    assert [r["index"] for r in manifest_rows(d)] == list(range(16))
    assert {r["job_id"] for r in manifest_rows(d)} == {job}
    assert stats(d)["u"]["count"] == 16 * 8 * 8 * 4
    assert len(list((tmp_path / "outputs" / "fields").glob("*.h5"))) == 16  # cwd: submit dir

    result = pickle.loads((d / "slurm" / "logs" / f"{job}_0_result.pkl").read_bytes())
    assert result[0] == "success" and result[1]["exit_code"] == 0
    assert result[1]["counts"]["ok"] == 16

    st = status(fake, d)
    assert st["status"] == "complete" and not st["live"]
    assert st["jobs"][0]["state"] == "COMPLETED" and st["jobs"][0]["exit_code"] == "0:0"

    logs = cli("logs", str(d), "--rank", "0", env=fake.env, check=True).stdout
    assert f"{job}_0_log.out <==" in logs and f"{job}_0_log.err <==" in logs
    assert "Job completed successfully" in logs  # submitit's own log line of task 0


def test_submit_wait_follows_the_job_to_completion(tmp_path: Path) -> None:
    fake = FakeSlurm(tmp_path / "fake-slurm", auto_run=True)  # sbatch starts the job itself
    try:
        d = tmp_path / "run"
        proc = cli("submit", EXAMPLE, *SMALL, "--run-dir", str(d), "--wait", env=fake.env)
        job = fake.last_job()
        assert proc.returncode == 0, proc.stdout + proc.stderr + fake.runner_log(job)
        assert "16/16 ok" in proc.stderr + proc.stdout
        assert fake.job(job)["state"] == "COMPLETED"
        assert read_manifest(d)["status"] == "complete"
    finally:
        fake.close()


class Waiting:
    """``hpc-curate ARGS`` (a ``--wait``) running in the background until the test ends it."""

    def __init__(self, fake: FakeSlurm, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hpc_curator", *args],
            cwd=cwd,
            env=dict(os.environ, **fake.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.fake = fake

    def submitted(self, count: int = 1, timeout: float = 20) -> str:
        """Wait until the fake holds ``count`` jobs; return the latest."""
        deadline = time.monotonic() + timeout
        while len(self.fake.jobs()) < count:
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "nothing submitted"
            time.sleep(0.05)
        return self.fake.last_job()

    def result(self, timeout: float = 30) -> tuple[int, str, str]:
        """Exit code, stdout and stderr once it returned."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def stop(self) -> None:
        """Kill it if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def test_submit_wait_exits_nonzero_when_indices_fail(fake: FakeSlurm, tmp_path: Path) -> None:
    d = tmp_path / "run"
    waiting = Waiting(
        fake,
        tmp_path,
        "submit",
        SLOW,
        "-p",
        "n=20",
        "-p",
        "fail=3,11",
        "--run-dir",
        str(d),
        "--wait",
    )
    try:
        job = waiting.submitted()
        fake.run_job(job)
        code, out, err = waiting.result()
    finally:
        waiting.stop()
    assert code == 1, out + err
    assert "18/20 ok, 2 failed" in err
    failed = cli("failed", str(d), env=fake.env)
    assert failed.returncode == 1 and "index 3" in failed.stdout and "index 11" in failed.stdout
    assert "node fake1" in failed.stdout


def test_submit_wait_exits_nonzero_when_the_job_fails_before_running(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    d = tmp_path / "run"
    waiting = Waiting(fake, tmp_path, "submit", EXAMPLE, *SMALL, "--run-dir", str(d), "--wait")
    try:
        job = waiting.submitted()
        fake.set_state(job, "RUNNING")
        time.sleep(0.5)
        assert waiting.proc.poll() is None  # still RUNNING: still waiting
        fake.set_state(job, "FAILED", exit_code="1:0")  # e.g. the setup lines failed
        code, out, err = waiting.result()
    finally:
        waiting.stop()
    assert code not in (0, None), out + err
    assert "incomplete" in err and "Traceback" not in err, err


def test_submit_wait_names_the_failed_jobs_exit_code(fake: FakeSlurm, tmp_path: Path) -> None:
    d = tmp_path / "run"
    waiting = Waiting(fake, tmp_path, "submit", EXAMPLE, *SMALL, "--run-dir", str(d), "--wait")
    try:
        fake.set_state(waiting.submitted(), "FAILED", exit_code="1:0")
        code, _out, err = waiting.result()
    finally:
        waiting.stop()
    assert code != 0
    assert "exited with code 0" not in err, err
    # sacct's state and exit code, and no advice to re-run what cannot succeed
    assert "ended FAILED (exit code 1:0) before the run finished" in err, err
    assert "re-running will not help" in err and "re-run the same command" not in err, err


def test_cancel_calls_scancel_with_the_recorded_job(fake: FakeSlurm, tmp_path: Path) -> None:
    d = tmp_path / "run"
    job = submit(fake, d, *SMALL)
    out = cli("cancel", str(d), env=fake.env, check=True).stdout
    assert f"cancelled {job}" in out and f"hpc-curate resume {d}" in out
    assert [c["argv"] for c in fake.calls("scancel")] == [[job]]
    assert status(fake, d)["jobs"][0]["state"] == "CANCELLED"
    again = cli("cancel", str(d), env=fake.env, check=True).stdout
    assert "no active job to cancel" in again
    assert len(fake.calls("scancel")) == 1  # a finished job is not cancelled again


def test_cancel_a_running_job_then_resume_with_other_options(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    d = tmp_path / "run"
    n = 100  # ~10 s on one rank: the cancel lands mid-run even on a loaded CI machine
    job = submit(
        fake,
        d,
        "-p",
        f"n={n}",
        "-p",
        "sleep=0.1",
        "--commit-every",
        "2",
        "--time",
        "30",
        spec=SLOW,
    )
    fake.start_job(job)
    wait_for_commits(d, 4)
    doc = status(fake, d)
    assert doc["live"] and doc["jobs"][0]["state"] == "RUNNING"
    busy = cli("resume", str(d), env=fake.env)  # the run dir is in use by the running job
    assert busy.returncode != 0 and "in use by attempt 1" in busy.stderr, busy.stderr
    assert "Traceback" not in busy.stderr and len(fake.calls("sbatch")) == 1
    out = cli("cancel", str(d), env=fake.env, check=True).stdout
    assert f"cancelled {job}" in out
    fake.wait_state(job, ("CANCELLED",))
    deadline = time.monotonic() + 20
    while fake.job(job)["pgid"] is not None:  # the ranks commit and exit on SIGTERM
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (attempt,) = read_manifest(d)["attempts"]
    assert attempt["reason"] == "SIGTERM" and attempt["job_id"] == job
    done_before = journal_commits(d)
    assert 0 < done_before < n

    dry = cli("resume", str(d), "--nodes", "2", "--dry-run", env=fake.env, check=True).stdout
    assert "#SBATCH --nodes=2" in dry and "export HPC_CURATOR_EXPECTED_SIZE=2" in dry
    assert "#SBATCH --time=30" in dry  # the recorded options stay
    assert len(fake.calls("sbatch")) == 1

    cli("resume", str(d), "--ntasks-per-node", "1", "--time", "20", env=fake.env, check=True)
    second = fake.last_job()
    assert second != job and len(fake.calls("sbatch")) == 2
    assert "#SBATCH --time=20" in fake.script(second)
    assert len(list((d / "slurm" / "submissions").glob("*.json"))) == 2
    assert fake.run_job(second) == 0, fake.runner_log(second)
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(n))  # nothing done twice, nothing lost
    assert journal_commits(d) == n
    assert {r["job_id"] for r in rows} == {job, second}
    assert [a["reason"] for a in read_manifest(d)["attempts"]] == ["SIGTERM", "done"]


def test_resume_on_more_nodes_submits_a_two_rank_job(fake: FakeSlurm, tmp_path: Path) -> None:
    d = tmp_path / "run"
    job = submit(fake, d, *SMALL, "--partition", "debug")
    fake.set_state(job, "CANCELLED", exit_code="0:0")
    cli("resume", str(d), "--nodes", "2", env=fake.env, check=True)
    second = fake.last_job()
    script = fake.script(second)
    assert "#SBATCH --nodes=2" in script and "#SBATCH --partition=debug" in script
    assert fake.job(second)["ntasks"] == 2
    # The fake srun gives no PMI: both tasks come up as MPI singletons and must refuse at once.
    assert fake.run_job(second) != 0
    assert fake.job(second)["state"] == "FAILED"
    # srun --kill-on-bad-exit kills the other task once the first refuses: which of the two
    # refused first (and so logged it) is up to the scheduler of the machine.
    logs = [cli("logs", str(d), "--rank", str(r), env=fake.env, check=True).stdout for r in (0, 1)]
    said = [t for t in logs if "every rank is an MPI singleton" in t]
    assert said and all("--mpi pmi2" in t for t in said), logs
    assert journal_commits(d) == 0  # no index ran


def test_time_limit_warning_requeues_through_the_job_script(
    fake: FakeSlurm, tmp_path: Path
) -> None:
    d = tmp_path / "run"
    job = submit(fake, d, "-p", "n=40", "-p", "sleep=0.05", "--commit-every", "2", spec=SLOW)
    runner = fake.start_job(job)
    wait_for_commits(d, 4)
    signalled = fake.run("scancel", "--signal=USR2", job)  # what --signal=USR2@90 delivers
    assert signalled.returncode == 0, signalled.stderr
    runner.wait(timeout=30)
    record = fake.job(job)
    assert record["state"] == "PENDING" and record["restarts"] == 1, fake.runner_log(job)
    assert [c["argv"] for c in fake.calls("scontrol")] == [["requeue", job]]
    assert fake.run_job(job) == 0, fake.runner_log(job)  # the requeued job runs again
    doc = read_manifest(d)
    assert doc["status"] == "complete"
    assert [a["reason"] for a in doc["attempts"]] == ["SIGUSR2", "done"]
    assert {a["job_id"] for a in doc["attempts"]} == {job}  # same job, requeued
    assert [r["index"] for r in manifest_rows(d)] == list(range(40))


def test_no_sbatch_on_path_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = cli("submit", EXAMPLE, *SMALL, "--run-dir", str(d), env={"PATH": no_slurm_path()})
    assert proc.returncode != 0
    assert proc.stderr.startswith("Error: sbatch is not on PATH"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not d.exists()


def test_sbatch_refusal_is_one_line_and_leaves_nothing(fake: FakeSlurm, tmp_path: Path) -> None:
    d = tmp_path / "run"
    fake.fail_next_sbatch("Batch job submission failed: Invalid account or account/partition")
    proc = cli("submit", EXAMPLE, *SMALL, "--run-dir", str(d), env=fake.env)
    assert proc.returncode != 0
    (error,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    assert "sbatch refused the job" in error and "Invalid account" in error
    assert "Traceback" not in proc.stderr
    assert not d.exists()
    assert len(fake.calls("sbatch")) == 1 and not fake.jobs()


def test_sbatch_refusal_is_reported_once(fake: FakeSlurm, tmp_path: Path) -> None:
    fake.fail_next_sbatch("Batch job submission failed: Invalid account or account/partition")
    proc = cli("submit", EXAMPLE, *SMALL, "--run-dir", str(tmp_path / "run"), env=fake.env)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("Warning:")]
    assert len(errors) == 1, proc.stderr


def test_submit_wait_returns_on_a_cluster_without_accounting(tmp_path: Path) -> None:
    fake = FakeSlurm(tmp_path / "fake-slurm", accounting=False)
    d = tmp_path / "run"
    waiting = Waiting(fake, tmp_path, "submit", EXAMPLE, *SMALL, "--run-dir", str(d), "--wait")
    try:
        job = waiting.submitted()
        assert fake.run_job(job) == 0, fake.runner_log(job)
        assert read_manifest(d)["status"] == "complete"
        try:
            code, out, err = waiting.result(timeout=8)
        except subprocess.TimeoutExpired:
            pytest.fail("submit --wait still waiting 8 s after the job left the queue")
        assert code == 0, out + err
    finally:
        waiting.stop()
        fake.close()
