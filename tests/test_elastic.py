"""Elastic runs without MPI (run --elastic N): claims, reclaim after a SIGKILL, exactness."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import (
    FIXTURE_PIPELINES,
    assert_stats_equal,
    cli,
    commit_count,
    manifest_rows,
    read_manifest,
    stats,
)


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
    assert chunks == len(list(claims.glob("c*.done"))) == 400 // 9 + 1  # ceil(400/48)=9 each
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
