"""Elastic runs without MPI (run --elastic N): claims, reclaim after a SIGKILL, exactness."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpc_curator.engine import elastic
from hpc_curator.engine.elastic import Board
from hpc_curator.store import rundir
from tests.conftest import (
    FIXTURE_PIPELINES,
    assert_stats_equal,
    cli,
    commit_count,
    manifest_rows,
    read_manifest,
    stats,
)
from tests.fake_slurm import FakeSlurm


def reference(tmp_path: Path, n: int) -> dict:
    d = tmp_path / "ref"
    cli("run", f"{FIXTURE_PIPELINES}:stats", "-p", f"n={n}", "--run-dir", str(d), "-q",
        check=True)  # fmt: skip
    return stats(d)


def test_elastic_tasks_share_the_work_and_merge_once(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = cli("run", f"{FIXTURE_PIPELINES}:stats", "-p", "n=400", "-p", "sleep=0.003",
               "--elastic", "3", "--run-dir", str(d), "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = read_manifest(d)
    assert doc["status"] == "complete" and doc["counts"]["ok"] == 400
    assert doc["attempts"][-1]["launcher"] == "elastic"
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(400))  # each index once
    per_task = collections.Counter(r["rank"] for r in rows)
    assert len(per_task) == 3 and min(per_task.values()) > 50  # everyone got work
    claims = d / "claims" / "a0001"
    chunks = len(list(claims.glob("c*.g0")))
    assert chunks == len(list(claims.glob("c*.done"))) == 50  # 3 x 16 = 48 wanted: 400 // 48 = 8
    assert (claims / "finisher").exists()
    assert_stats_equal(stats(d), reference(tmp_path, 400))


def test_a_killed_task_s_chunk_is_reclaimed_and_nothing_counts_twice(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = cli("run", f"{FIXTURE_PIPELINES}:kill_once", "-p", "n=300", "-p", "at=100",
               "-p", f"marker={tmp_path / 'killed'}", "-p", "sleep=0.003", "--elastic", "3",
               "--run-dir", str(d), "-q", "--commit-every", "4")  # fmt: skip
    assert (tmp_path / "killed").exists()  # one task really died at index 100
    assert proc.returncode == 0, proc.stderr
    assert "elastic task(s)" in proc.stderr and "(SIGKILL) died" in proc.stderr
    claims = d / "claims" / "a0001"
    assert list(claims.glob("c*.g1")), "the dead task's chunk was not reclaimed"
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(300))
    doc = read_manifest(d)
    assert doc["status"] == "complete"
    ref = tmp_path / "ref"  # the same pipeline, sequential, the marker in place: no kill
    cli("run", f"{FIXTURE_PIPELINES}:kill_once", "-p", "n=300", "-p",
        f"marker={tmp_path / 'killed'}", "--run-dir", str(ref), "-q", check=True)  # fmt: skip
    assert_stats_equal(stats(d), stats(ref))
    assert stats(d)["u"]["count"] == 300 * 64  # nothing double counted


def test_sigterm_stops_every_task_and_resume_completes(tmp_path: Path) -> None:
    d = tmp_path / "run"
    args = ["run", f"{FIXTURE_PIPELINES}:stats", "-p", "n=300", "-p", "sleep=0.02",
            "--elastic", "2", "--run-dir", str(d), "-q", "--commit-every", "2"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "hpc_curator", *args],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while commit_count(d) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    doc = read_manifest(d)
    assert doc["status"] == "incomplete" and 0 < doc["counts"]["pending"] < 300
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert [r["index"] for r in manifest_rows(d)] == list(range(300))
    assert_stats_equal(stats(d), reference(tmp_path, 300))


def test_a_late_claim_is_dead_once_slurm_says_its_job_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim from another host: neither its pid nor a requeue can tell. A late heartbeat
    makes it suspect; the (fake) squeue decides; a fresh heartbeat is never asked about."""
    fake = FakeSlurm(tmp_path / "fake-slurm")
    try:
        for key, value in fake.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("SLURM_JOB_ID", "")  # the claimer below is not itself a job
        job = fake.run("sbatch", "--parsable", "--wrap", "true").stdout.strip().split(";")[0]
        fake.set_state(job, "RUNNING")
        board = Board(rundir.RunDir(tmp_path / "run"), 1)
        board.dir.mkdir(parents=True)
        doc = {"task": 5, "host": "elsewhere", "pid": 1, "time": time.time(), "slurm_job": job}
        (board.dir / "c0000000.g0").write_text(json.dumps(doc))
        beat = board.heartbeat_path(5)
        beat.touch()
        assert not board._dead("c0000000.g0", 0, 8) and board.suspects() == 0
        assert fake.calls("squeue") == []  # fresh heartbeat: Slurm is not asked
        late = time.time() - 4 * elastic.heartbeat_interval()
        os.utime(beat, (late, late))
        assert board.suspects() == 1
        assert not board._dead("c0000000.g0", 0, 8)  # late, but Slurm says RUNNING
        assert len(fake.calls("squeue")) == 1
        fake.set_state(job, "FAILED", exit_code="0:9")
        assert not board._dead("c0000000.g0", 0, 8)  # asked again only after 30 s
        board._asked[job] = (time.monotonic() - elastic.SUSPECT_RECHECK_S, False)
        assert board._dead("c0000000.g0", 0, 8)
        assert board.claim(0, 1, 8) == (0, 1)  # reclaimed as generation 1
        assert json.loads((board.dir / "c0000000.g1").read_text())["task"] == 0
    finally:
        fake.close()


def test_an_empty_claim_left_by_a_crash_ages_out_like_a_stale_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims are written without fsync: after a crash of the machine one can be empty. It
    must neither crash the board nor pass for a requeued task's own; it dies when stale."""
    board = Board(rundir.RunDir(tmp_path / "run"), 1)
    board.dir.mkdir(parents=True)
    (board.dir / "c0000000.g0").write_text("")
    assert board.claim(7, 1, 8) is None  # task 7 of 8: -1 % 8 == 7 must not count as "mine"
    monkeypatch.setenv(elastic.STALE_ENV, "5")
    old = time.time() - 10
    os.utime(board.dir / "c0000000.g0", (old, old))
    assert board.claim(7, 1, 8) == (0, 1)


def test_the_default_chunking_keeps_claims_few_but_gives_every_task_work() -> None:
    for n, tasks in ((2000, 8), (10**6, 100), (10**6, 1001), (10**8, 65536)):
        chunks = -(-n // elastic.default_chunk_size(n, tasks))
        assert chunks >= min(n, elastic.MIN_CHUNKS_PER_TASK * tasks)  # nobody left idle
        assert chunks <= 2 * max(elastic.TARGET_CHUNKS, elastic.MIN_CHUNKS_PER_TASK * tasks)
    assert -(-2000 // elastic.default_chunk_size(2000, 8)) == 134  # ~16 per task when few
