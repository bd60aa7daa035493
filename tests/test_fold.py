"""A large run's manifest and resume scan, folded in parts (fold.py), equal the in-memory ones.

A real run (2 MPI ranks, failures, a retry, stage times, tracked memory, outputs) is folded
with parts of a few dozen rows, so its rows spill to many index buckets; the summary, the
``manifest.parquet`` table and the resume status must be what the one-pass scan gives.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from hpc_curator.store import fold, journal, manifest, rundir
from tests.conftest import FIXTURE_PIPELINES, cli

SPEC = f"{FIXTURE_PIPELINES}:stats"
N = 300
FAILING = (5, 17, 233, 299)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("fold")
    d = tmp / "run"
    common = ("-p", f"n={N}", "-p", f"fail={','.join(map(str, FAILING))}",
              "-p", f"out={tmp / 'out'}", "--run-dir", str(d), "-q")  # fmt: skip
    first = cli("run", SPEC, *common, "--ranks", "2", "--commit-every", "7", "--track-memory")
    assert first.returncode == 1, first.stderr
    retry = cli("run", SPEC, *common, "--ranks", "2", "--retry-failed")  # records again
    assert retry.returncode == 1, retry.stderr
    return d


def _approx(doc: Any) -> Any:
    """``doc`` with floats rounded (sums taken part by part differ in the last bits)."""
    if isinstance(doc, dict):
        return {k: _approx(v) for k, v in doc.items() if k != "written"}
    if isinstance(doc, list):
        return [_approx(v) for v in doc]
    if isinstance(doc, float):
        return float(f"{doc:.9g}")
    return doc


def test_a_folded_manifest_equals_the_in_memory_one(run_dir: Path) -> None:
    rd = rundir.RunDir(run_dir)
    rows = 37
    n_records = len(journal.scan(rd).idx)
    assert n_records > N  # the retry recorded the failed indices a second time
    rd.save_groups(np.arange(N) // 3 * 3)  # groups of three: the group column too
    whole = journal.scan(rd)
    expected_doc = manifest.summarize(rd, whole)
    expected = manifest.build_table(rd, whole)

    folded = fold.fold(rd, rows=rows)
    assert folded.spilled and folded.buckets == min(fold.MAX_BUCKETS, math.ceil(N / rows))
    spilled = sorted(p.name for p in rd.spill_dir.iterdir())
    assert len(spilled) == folded.buckets  # every bucket got rows
    doc = fold.summarize(rd, folded)
    fold.write(rd, folded, doc, 2)
    assert not rd.spill_dir.exists()  # the spill is gone once the manifest is written
    table = pq.read_table(rd.manifest_parquet)

    assert table.schema == expected.schema
    for name in expected.column_names:
        got, want = table.column(name).to_pylist(), expected.column(name).to_pylist()
        assert got == want, name
    assert table.column("index").to_pylist() == list(range(N))
    assert "py_peak_bytes" in table.column_names and "group" in table.column_names
    assert any(c.startswith("time_") for c in table.column_names)

    assert doc["counts"] == {"total": N, "ok": N - len(FAILING), "failed": len(FAILING),
                             "pending": 0}  # fmt: skip
    assert [f["index"] for f in doc["failures"]] == list(FAILING)
    assert doc.pop("attempt") == 2  # write() adds the attempt that wrote it
    assert _approx(doc) == _approx(expected_doc)
    written = manifest.recorded_outputs(rd)
    assert written == doc["outputs"]


def test_the_folded_resume_status_equals_the_scan(run_dir: Path) -> None:
    rd = rundir.RunDir(run_dir)
    frozen = rundir.load(rd).indices
    whole = journal.scan(rd, with_outputs=False)
    for rows in (11, 64, 10**6):
        status = fold.status(rd, frozen, rows=rows)
        assert status.recorded().tolist() == whole.recorded().tolist() == list(range(N))
        assert status.failed_indices().tolist() == sorted(whole.failed_indices().tolist())
        assert status.failed_indices().tolist() == list(FAILING)
        assert status.ends.keys() == whole.ends.keys()
        assert status.pending().tolist() == []


def test_a_spilled_end_of_attempt_resumes_and_completes(tmp_path: Path) -> None:
    """End to end with ``HPC_CURATOR_MANIFEST_ROWS`` small: the end of the attempt folds and
    spills, and a second run finds nothing pending through the folded resume status."""
    d = tmp_path / "run"
    env = {fold.ROWS_ENV: "1000"}
    args = ("run", SPEC, "-p", "n=2500", "-p", f"out={tmp_path / 'out'}", "--run-dir", str(d),
            "--commit-every", "50", "-q", "--ranks", "2")  # fmt: skip
    done = cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    rd = rundir.RunDir(d)
    table = pq.read_table(rd.manifest_parquet)
    assert table.column("index").to_pylist() == list(range(2500))
    assert not rd.spill_dir.exists()
    again = cli(*args, env=env)  # nothing pending: the folded status says so
    assert again.returncode == 0, again.stderr
    assert pq.read_table(rd.manifest_parquet).num_rows == 2500


def test_a_folded_run_with_nothing_recorded_yet(tmp_path: Path) -> None:
    from dataclasses import asdict

    from hpc_curator.engine.values import RunSettings

    rd = rundir.RunDir(tmp_path / "run")
    rundir.create_or_open(rd, {"kind": "factory", "ref": f"{FIXTURE_PIPELINES}:stats"},
                          np.arange(50, dtype=np.int64), asdict(RunSettings()))  # fmt: skip
    folded = fold.fold(rd, rows=10)
    assert folded.spilled and not any(rd.spill_dir.iterdir())
    doc = fold.summarize(rd, folded)
    fold.write(rd, folded, doc, 0)
    assert doc["counts"] == {"total": 50, "ok": 0, "failed": 0, "pending": 50}
    assert doc["status"] == "incomplete"
    assert pq.read_table(rd.manifest_parquet).num_rows == 0
    status = fold.status(rd, rundir.load(rd).indices, rows=10)
    assert len(status.recorded()) == 0 and len(status.failed_indices()) == 0
    assert status.pending().tolist() == list(range(50))


def test_the_folded_status_of_a_partly_done_run(tmp_path: Path) -> None:
    from benchmarks.probe import build_journal_run

    build_journal_run(tmp_path / "run", 400, 4, per_commit=10, failures=7)
    rd = rundir.RunDir(tmp_path / "run")
    next(rd.journal_dir.glob("*rank00003*")).unlink()  # rank 3's share is pending again
    frozen = rundir.load(rd).indices
    whole = fold.status(rd, frozen, rows=10**6)  # in memory
    parts = fold.status(rd, frozen, rows=25)
    assert parts.pending().tolist() == whole.pending().tolist() == list(range(3, 400, 4))
    assert parts.recorded().tolist() == whole.recorded().tolist()
    assert parts.failed_indices().tolist() == sorted(whole.failed_indices().tolist())
    assert 0 < len(parts.failed_indices()) <= 7
