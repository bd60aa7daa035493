"""Elastic runs under the faults launchers get wrong: a killed launcher relaunched at once, a
claimer hung between its claim check and its commit, a removed claim board, one task running
twice. Real processes, real signals; the records must add up to every index once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hpc_curator.engine.tasks import begin_elastic
from hpc_curator.engine.values import RunSettings
from hpc_curator.model import spec as specmod
from tests.conftest import (
    FIXTURE_PIPELINES,
    assert_stats_equal,
    cli,
    commit_count,
    manifest_rows,
    read_manifest,
    start_cli,
    stats,
)

FAST = {"HPC_CURATOR_HEARTBEAT_S": "0.2", "HPC_CURATOR_CLAIM_STALE_S": "1"}


hpc = start_cli


def stop(proc: subprocess.Popen[str]) -> None:
    """End a test's process by its pid, whatever state it is in."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
    proc.communicate(timeout=30)


def wait_until(check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def exact(d: Path, n: int, ref: dict[str, dict[str, float]]) -> None:
    doc = read_manifest(d)
    assert doc["status"] == "complete" and doc["counts"]["ok"] == n, doc["counts"]
    assert [r["index"] for r in manifest_rows(d)] == list(range(n))
    assert stats(d)["u"]["count"] == n * 64  # the merged state counts every index once
    assert_stats_equal(stats(d), ref)
    checked = cli("verify", str(d))
    assert checked.returncode == 0, checked.stderr


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, float]]:
    d = tmp_path_factory.mktemp("ref") / "run"
    cli("run", f"{FIXTURE_PIPELINES}:plain_stats", "-p", "n=200", "-p", "sleep=0",
        "--run-dir", str(d), "-q", check=True)  # fmt: skip
    return stats(d)


RUN = ("run", f"{FIXTURE_PIPELINES}:plain_stats", "-p", "n=200", "-p", "sleep=0.01",
       "--commit-every", "3", "-q")  # fmt: skip


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGHUP])
def test_a_killed_launcher_relaunched_at_once_counts_every_index_once(
    tmp_path: Path, ref: dict[str, dict[str, float]], how: signal.Signals
) -> None:
    d = tmp_path / "run"
    args = (*RUN, "--elastic", "2", "--run-dir", str(d))
    parent = hpc(*args, env=FAST)
    try:
        wait_until(lambda: commit_count(d) >= 4)
        os.kill(parent.pid, how)
        parent.communicate(timeout=60)
    finally:
        stop(parent)
    refused = 0
    for _ in range(100):  # at once, and again until it runs: never beside the old tasks
        again = cli(*args, env=FAST)
        if again.returncode == 0:
            break
        assert again.returncode == 4, again.stderr
        assert "elastic task(s)" in again.stderr and "Traceback" not in again.stderr
        refused += 1
        time.sleep(0.1)
    assert again.returncode == 0, again.stderr
    exact(d, 200, ref)


def test_a_claimer_hung_between_its_check_and_its_commit_is_rejected(
    tmp_path: Path, ref: dict[str, dict[str, float]]
) -> None:
    d, marker = tmp_path / "run", tmp_path / "stopped"
    parent = hpc("run", f"{FIXTURE_PIPELINES}:stop_in_flush", "-p", "n=200", "-p",
                 f"marker={marker}", "--commit-every", "3", "--elastic", "2",
                 "--run-dir", str(d), "-q", env=FAST)  # fmt: skip
    late: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: marker.exists() and marker.read_text())
        hung = int(marker.read_text())
        # once its heartbeat is stale the other task reclaims the hung claimer's chunk, or a
        # late task (an array task that starts late) does
        time.sleep(1.5)
        late = hpc("task", "--run-dir", str(d), "--attempt", "1", "--task", "3", env=FAST)
        wait_until(lambda: (d / "manifest.json").exists(), timeout=120)
        assert list((d / "claims" / "a0001").glob("c*.g1")), "the chunk was not reclaimed"
        os.kill(hung, signal.SIGCONT)  # wakes up and commits what was taken over
        parent.communicate(timeout=60)
        late.communicate(timeout=60)
    finally:
        stop(parent)
        if late is not None:
            stop(late)
    doc = json.loads(cli("manifest", str(d), "--json", check=True).stdout)
    assert doc["rejected_commit_count"] == 1, doc["rejected_commits"]
    exact(d, 200, ref)


def test_a_removed_claim_board_is_never_recreated_and_the_run_resumes_exactly(
    tmp_path: Path, ref: dict[str, dict[str, float]]
) -> None:
    import shutil

    d = tmp_path / "run"
    args = (*RUN, "--elastic", "2", "--run-dir", str(d))
    parent = hpc(*args, env=FAST)
    try:
        wait_until(lambda: commit_count(d) >= 6)
        # removed at once (tasks create claims meanwhile: an rmtree alone could race them)
        (d / "claims" / "a0001").rename(tmp_path / "removed-board")
        shutil.rmtree(tmp_path / "removed-board")
        _, err = parent.communicate(timeout=120)
    finally:
        stop(parent)
    assert parent.returncode == 3, err  # incomplete: the tasks stopped, nothing recreated
    assert not (d / "claims" / "a0001").exists()
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    exact(d, 200, ref)


def test_one_task_running_twice_writes_apart_and_later_launches_are_clean(
    tmp_path: Path, ref: dict[str, dict[str, float]]
) -> None:
    d = tmp_path / "run"
    spec = specmod.make_spec(f"{FIXTURE_PIPELINES}:plain_stats", {"n": "200", "sleep": "0.01"})
    plan, _ = begin_elastic(str(d), RunSettings(commit_every=3), 2, "array", spec=spec)
    task = ("task", "--run-dir", str(d), "--attempt", str(plan.attempt), "--task")
    procs = [hpc(*task, "0"), hpc(*task, "0"), hpc(*task, "1")]  # a requeue race
    try:
        for p in procs:
            p.communicate(timeout=120)
    finally:
        for p in procs:
            stop(p)
    names = sorted(p.name for p in (d / "journal").glob("a0001-rank00000-*.jsonl"))
    assert len(names) == 2  # two writers of task 0, two journals
    exact(d, 200, ref)
    again = cli(*RUN, "--run-dir", str(d))  # nothing to do, and says so with exit 0
    assert again.returncode == 0, again.stderr
    exact(d, 200, ref)
