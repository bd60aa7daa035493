"""Elastic job arrays on the local Slurm cluster: claims, a cancelled task, MaxArraySize."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    FIXTURE_PIPELINES,
    assert_stats_equal,
    cli,
    commit_count,
    manifest_rows,
    read_manifest,
    stats,
)
from tests.slurm.test_submit import wait_until

SPEC = f"{FIXTURE_PIPELINES}:stats"
N = 2000


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("ref") / "run"
    cli("run", SPEC, "-p", f"n={N}", "--run-dir", str(d), "-q", check=True)
    return stats(d)


def submit(d: Path, *extra: str, wait: bool = True) -> Any:
    return cli(
        "submit", SPEC, "-p", f"n={N}", "-p", "sleep=0.005", "--run-dir", str(d),
        "--time", "5", *extra, *(["--wait"] if wait else []), timeout=300,
    )  # fmt: skip


def test_an_array_of_8_tasks_shares_2000_indices(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    d = tmp_path / "run"
    proc = submit(d, "--array", "8")
    assert proc.returncode == 0, proc.stdout + proc.stderr + slurm_cluster.dump(d)
    assert "Submitted job array" in proc.stdout and "8 task(s)" in proc.stdout
    doc = read_manifest(d)
    assert doc["status"] == "complete" and doc["attempts"][-1]["launcher"] == "array"
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(N))  # each index once
    per_task = collections.Counter(r["rank"] for r in rows)
    assert set(per_task) <= set(range(8)) and len(per_task) >= 4  # they shared the work
    assert len({r["job_id"] for r in rows}) == len(per_task)  # one array task job id each
    job = proc.stdout.split("Submitted job array ")[1].split(":")[0]
    assert {r["array_job_id"] for r in rows} == {job}
    assert {int(r["array_task_id"]) for r in rows} == set(per_task)  # task t journals as t
    status = json.loads(cli("status", str(d), "--json", check=True).stdout)
    assert status["status"] == "complete" and len(status["rank_progress"]) == len(per_task)
    assert_stats_equal(stats(d), reference)
    claims = d / "claims" / "a0001"
    assert (claims / "finisher").exists()
    assert len(list(claims.glob("*.done"))) == len(list(claims.glob("*.g0")))


def test_more_tasks_than_max_array_size_still_run(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    d = tmp_path / "run"
    proc = submit(d, "--array", "12", "--array-parallel", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr + slurm_cluster.dump(d)
    assert "MaxArraySize (8): 8 tasks" in proc.stderr
    assert read_manifest(d)["status"] == "complete"
    assert_stats_equal(stats(d), reference)


def test_a_cancelled_task_leaves_an_honest_run_that_resume_completes(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    d = tmp_path / "run"
    proc = submit(d, "--array", "4", "--commit-every", "5", wait=False)
    assert proc.returncode == 0, proc.stderr
    array_job = json.loads(next((d / "slurm" / "submissions").glob("*.json")).read_text())
    job = array_job["job_id"]
    wait_until(lambda: commit_count(d) >= 20, 120, "first commits", slurm_cluster, d)
    slurm_cluster.run("scancel", "-s", "KILL", f"{job}_1")
    fin = array_job["finisher_job_id"]
    wait_until(
        lambda: not slurm_cluster.run("squeue", "-h", "-j", f"{job},{fin}").stdout.strip(),
        240, "the array and its finisher to leave the queue", slurm_cluster, d,
    )  # fmt: skip
    doc = read_manifest(d)  # written by the last task, or by the finisher job
    assert doc["status"] in ("complete", "incomplete"), doc["status"]
    if doc["status"] == "incomplete":
        assert doc["counts"]["pending"] > 0
        again = cli("resume", str(d), "--wait", timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr + slurm_cluster.dump(d)
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(N))
    assert_stats_equal(stats(d), reference)


def test_workers_make_a_small_pool_in_every_array_task(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    d = tmp_path / "run"
    proc = submit(d, "--array", "2", "--workers", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr + slurm_cluster.dump(d)
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(N))
    by_task = collections.defaultdict(set)
    for r in rows:
        by_task[r["array_task_id"]].add(r["rank"])
    assert {k: sorted(v) for k, v in by_task.items()} == {"0": [0, 1], "1": [2, 3]}
    assert_stats_equal(stats(d), reference)


@pytest.mark.slow
def test_a_task_at_its_time_limit_commits_is_requeued_alone_and_the_run_completes(
    slurm_cluster: Any, tmp_path: Path, reference: dict
) -> None:
    d = tmp_path / "run"
    # 2 tasks x 1000 indices x 0.03 s = 30 s of work each; SIGUSR2 45 s before the 1 min limit
    proc = cli(
        "submit", SPEC, "-p", f"n={N}", "-p", "sleep=0.03", "--run-dir", str(d), "--array", "2",
        "--time", "1", "--signal-delay", "45", "--commit-every", "10", "--wait", timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr + slurm_cluster.dump(d)
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(N))
    restarted = {r["rank"] for r in rows if r["rank"] >= 2}  # task + 2 * restart
    assert restarted, "no task was requeued"
    assert_stats_equal(stats(d), reference)


def test_a_sigkilled_task_s_claim_goes_to_a_task_that_started_late(
    slurm_cluster: Any, tmp_path: Path
) -> None:
    """4 tasks, at most 2 at once (``%2``): the task running index 300 SIGKILLs itself
    mid-chunk; a throttled task starts after it and still gets work, the dead claim is
    reclaimed, and nothing is lost or counted twice."""
    d = tmp_path / "run"
    marker = tmp_path / "killed"
    spec = f"{FIXTURE_PIPELINES}:kill_once"
    # 2000 x 0.02 s = 20 s per running task: the killed task leaves well before the end
    proc = cli(
        "submit", spec, "-p", f"n={N}", "-p", "at=300", "-p", f"marker={marker}",
        "-p", "sleep=0.02", "--run-dir", str(d), "--array", "4", "--array-parallel", "2",
        "--time", "5", "--commit-every", "5", "--wait", timeout=400,
    )  # fmt: skip
    assert marker.exists(), "no task killed itself"
    assert proc.returncode == 0, proc.stdout + proc.stderr + slurm_cluster.dump(d)
    assert "#SBATCH --array=0-3%2" in (d / "slurm" / "array-a0001.sbatch").read_text()
    assert read_manifest(d)["status"] == "complete"
    claims = d / "claims" / "a0001"
    assert list(claims.glob("c*.g1")), "the dead task's chunk was not reclaimed"
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(N))  # each index once
    late = {int(r["array_task_id"]) for r in rows} - {0, 1}
    assert late, "the tasks the throttle held back got no work"
    ref = tmp_path / "ref"  # sequential, the marker in place: no kill
    cli("run", spec, "-p", f"n={N}", "-p", f"marker={marker}", "--run-dir", str(ref), "-q",
        check=True)  # fmt: skip
    assert_stats_equal(stats(d), stats(ref))
    assert stats(d)["u"]["count"] == N * 64  # nothing double counted


def test_failed_logs_report_retry_and_cancel_work_for_array_runs(
    slurm_cluster: Any, tmp_path: Path
) -> None:
    d = tmp_path / "run"
    chatty = f"{FIXTURE_PIPELINES}:chatty"
    proc = cli("submit", chatty, "-p", "n=300", "-p", "fail=7,250", "--run-dir", str(d),
               "--array", "3", "--time", "5", "--wait", timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr + slurm_cluster.dump(d)  # 2 failed
    assert read_manifest(d)["counts"]["failed"] == 2
    failed = cli("failed", str(d)).stdout  # exits 1: there are failures
    assert "injected failure at index 7" in failed and "index 250" in failed
    assert "  task " in failed and "  rank " not in failed
    row = next(r for r in manifest_rows(d) if r["index"] == 7)
    logs = cli("logs", str(d), "--task", str(row["rank"]), "--index", "7", check=True).stdout
    assert "hello from index 7" in logs and "hello from index 8" not in logs
    cli("report", str(d), check=True)
    page = (d / "report.html").read_text()
    assert "<td>indices</td><td>7, 250</td>" in page and "injected failure at index 7" in page
    again = cli("retry", str(d), "--array", "2", "--wait", timeout=300)
    assert again.returncode == 1, again.stdout + again.stderr  # the same two fail again
    doc = read_manifest(d)
    assert doc["attempts"][-1]["launcher"] == "array" and doc["counts"]["failed"] == 2
    assert {r["attempt"] for r in manifest_rows(d) if r["index"] in (7, 250)} == {2}

    e = tmp_path / "cancelled"
    proc = submit(e, "--array", "2", "--commit-every", "5", wait=False)
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: commit_count(e) >= 10, 120, "first commits", slurm_cluster, e)
    out = cli("cancel", str(e), check=True).stdout
    job = json.loads(next((e / "slurm" / "submissions").glob("*.json")).read_text())
    assert f"cancelled {job['job_id']}" in out
    wait_until(lambda: (e / "manifest.json").exists(), 120, "the finisher", slurm_cluster, e)
    doc = read_manifest(e)  # the finisher job (afterany) wrote it: honest, not complete
    assert doc["status"] == "incomplete" and doc["counts"]["pending"] > 0
