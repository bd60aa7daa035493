"""``Run("D")``: query a finished and a running run; invalidate and extend, exactly."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from hpc_curator import Run
from hpc_curator.errors import RunBusyError, UsageError
from hpc_curator.store import rundir
from tests.conftest import (
    FIXTURE_PIPELINES,
    assert_stats_equal,
    cli,
    manifest_rows,
    read_manifest,
    stats,
)
from tests.test_stop import start_and_wait_for_commits

SPEC = f"{FIXTURE_PIPELINES}:stats"


def finished_run(tmp_path: Path, *extra: str) -> Path:
    d = tmp_path / "run"
    proc = cli("run", SPEC, "-p", "n=40", "-p", "fail=5,17", "-p", f"out={tmp_path / 'out'}",
               "--run-dir", str(d), "--commit-every", "4", "-q", *extra)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    return d


def test_query_a_finished_run(tmp_path: Path) -> None:
    d = finished_run(tmp_path, "--ranks", "2")
    r = Run(d)
    assert r.status == "failed" and not r.running
    assert r.completed == [i for i in range(40) if i not in (5, 17)]
    assert set(r.failed) == {5, 17} and r.failed[5] == "RuntimeError: injected failure at index 5"
    assert r.pending == []
    assert r.summary()["counts"] == {"total": 40, "ok": 38, "failed": 2, "pending": 0}
    paths = r.outputs(12)
    assert len(paths) == 1 and Path(paths[0]).is_file()
    assert r.index_for(paths[0]) == 12 and r.index_for("/no/such") is None
    assert r.outputs(5) == []
    table = r.table()
    assert table.num_rows == 40 and table.column("index").to_pylist() == list(range(40))
    assert table.to_pylist() == manifest_rows(d)  # the same rows as manifest.parquet
    assert r.report().is_file()


def test_query_a_running_run(tmp_path: Path) -> None:
    d = tmp_path / "run"
    proc = start_and_wait_for_commits(d, ("--ranks", "2"))
    try:
        r = Run(d)
        assert r.status == "running" and r.running
        assert 0 < len(r.completed) < 300 and len(r.pending) > 0
        table = r.table()  # read while the ranks go on: later reads may only know more
        known = set(r.completed) | set(r.failed)
        assert 0 < table.num_rows <= len(known)
        assert set(table.column("index").to_pylist()) <= known
        with pytest.raises(RunBusyError):
            r.invalidate([1])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    after = Run(d)  # stopped (or, on a slow machine, done): either way no longer running
    assert after.status == ("incomplete" if after.pending else "complete")


@pytest.mark.parametrize("launcher", [["--backend", "sequential"], ["--ranks", "2"]])
def test_invalidate_then_resume_is_exact(tmp_path: Path, launcher: list[str]) -> None:
    d = tmp_path / "run"
    args = ["run", SPEC, "-p", "n=40", "-p", f"out={tmp_path / 'out'}", "--run-dir", str(d),
            "--commit-every", "4", "-q", *launcher]  # fmt: skip
    cli(*args, check=True)
    clean = stats(d)
    proc = cli("invalidate", str(d), "--indices", "7,30")
    assert proc.returncode == 0, proc.stderr
    again = Run(d).pending
    assert {7, 30} <= set(again) and len(again) <= 16  # at most their two batches of 4 x ranks
    doc = read_manifest(d)  # rewritten at once: no longer complete
    assert doc["status"] == "incomplete" and doc["counts"]["pending"] == len(again)
    assert doc["unmerged_outputs"] == ["stats"]
    record = json.loads(next((d / "invalidations").glob("*.json")).read_text())
    assert record["pending_again"] == len(again) and record["records"]
    cli(*args, check=True)  # the resume re-runs exactly those
    rows = {r["index"]: r for r in manifest_rows(d)}
    assert {i for i, r in rows.items() if r["attempt"] == 2} == set(again)
    assert read_manifest(d)["status"] == "complete"
    assert_stats_equal(stats(d), clean)
    assert stats(d)["u"]["count"] == 40 * 64  # nothing counted twice


def test_invalidate_refuses_indices_outside_the_run(tmp_path: Path) -> None:
    d = finished_run(tmp_path)
    with pytest.raises(UsageError, match="not one of the run's indices"):
        Run(d).invalidate([40])
    assert not (d / "invalidations").exists()


def test_extend_adds_a_revision_and_resume_runs_only_the_new(tmp_path: Path) -> None:
    d = tmp_path / "run"
    base = ["run", SPEC, "-p", "n=60", "--run-dir", str(d), "-q"]
    cli(*base, "--indices", "0:30", check=True)
    proc = cli("extend", str(d), "--indices", "30:45")
    assert proc.returncode == 0, proc.stderr
    assert "15 indices added: the run has 45 (revision 2)" in proc.stdout
    meta = rundir.load(rundir.RunDir(d)).meta  # run.json itself is never rewritten
    assert "revisions" not in json.loads((d / "run.json").read_text())
    assert meta["revisions"][0]["added"] == [[30, 45, 1]]
    assert meta["revisions"][0]["count_before"] == 30
    assert Run(d).pending == list(range(30, 45))
    cli(*base, check=True)  # resume: no --indices, the extended list
    rows = manifest_rows(d)
    assert [r["index"] for r in rows] == list(range(45))
    assert {r["index"] for r in rows if r["attempt"] == 2} == set(range(30, 45))
    ref = tmp_path / "ref"
    cli("run", SPEC, "-p", "n=60", "--run-dir", str(ref), "-q", "--indices", "0:45", check=True)
    assert_stats_equal(stats(d), stats(ref))
    for bad, says in (("40:50", "in the run already"), ("55:61", "goes past")):
        proc = cli("extend", str(d), "--indices", bad)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
