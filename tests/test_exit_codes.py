"""Documented exit codes, one line each: a rank that leaves with os._exit(1) makes an
incomplete run (3, resume), and a merge that raises under a process pool is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import cli, read_manifest, stats

EXITER = """
import os
from hpc_curator import Filter, Pipeline
from hpc_curator.components import FieldStats, SyntheticSource


class Exit1(Filter):
    def __call__(self, items):
        for item in items:
            if item["index"] == 7 and not os.environ.get("NO_EXIT"):
                os._exit(1)
            yield item


class BadMerge(FieldStats):
    @classmethod
    def merge(cls, shard_paths, out_path):
        raise ValueError("cannot merge these shards")


def exiter():
    p = Pipeline(SyntheticSource(n=20, shape=(4,), fields=("u",)))
    return p.filter(Exit1()).filter(FieldStats(name="stats"))


class FullDisk(FieldStats):
    @classmethod
    def write_state(cls, state, path):
        import errno

        if "/shards/" in path:  # a commit's segment: the disk is full; the end's merge is not
            raise OSError(errno.ENOSPC, "No space left on device", path)
        super().write_state(state, path)


def full_disk():
    p = Pipeline(SyntheticSource(n=20, shape=(4,), fields=("u",)))
    return p.filter(FullDisk(name="stats"))


def bad_merge():
    return Pipeline(SyntheticSource(n=20, shape=(4,), fields=("u",))).filter(BadMerge(name="s"))
"""


@pytest.mark.mpi
def test_a_rank_leaving_with_exit_1_makes_an_incomplete_run_exit_3(tmp_path: Path) -> None:
    (tmp_path / "p.py").write_text(EXITER)
    d = tmp_path / "run"
    args = ("run", f"{tmp_path}/p.py:exiter", "--ranks", "2", "--run-dir", str(d), "-q")
    first = cli(*args)
    assert first.returncode == 3, first.stderr
    assert "re-run the same command to resume" in first.stderr + first.stdout
    again = cli(*args, env={"NO_EXIT": "1"})
    assert again.returncode == 0, again.stderr
    assert read_manifest(d)["counts"]["ok"] == 20 and stats(d)["u"]["count"] == 80


@pytest.mark.parametrize("backend", ["process_pool", "loky"])
def test_a_merge_error_under_a_pool_is_one_line(tmp_path: Path, backend: str) -> None:
    if backend == "loky":
        pytest.importorskip("joblib")
    (tmp_path / "p.py").write_text(EXITER)
    d = tmp_path / "run"
    proc = cli("run", f"{tmp_path}/p.py:bad_merge", "-j", "2", "--backend", backend,
               "--run-dir", str(d), "-q")  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert lines == ["Error: could not finish the attempt: ValueError: cannot merge these shards"]


@pytest.mark.parametrize(
    ("status", "reasons", "returncode", "resumable", "code"),
    [
        ("complete", (), 0, True, 0),
        ("failed", (), 0, True, 1),
        ("incomplete", (), 0, True, 3),
        ("incomplete", ("max_failures",), 0, True, 1),
        ("incomplete", (), 1, True, 3),  # a rank's os._exit(1): resume
        ("incomplete", (), 137, True, 3),  # killed: resume
        ("incomplete", (), 0, False, 5),  # the job failed by itself
        ("incomplete", (), 4, True, 4),  # the rank program's own codes win
        ("complete", (), 2, True, 2),
        ("complete", (), 137, True, 137),  # finished, but its launcher did not end well
        ("what", (), 0, True, 3),
    ],
)
def test_the_one_table_of_exit_codes(
    status: str, reasons: tuple[str, ...], returncode: int, resumable: bool, code: int
) -> None:
    from hpc_curator.engine.values import exit_code_for

    assert exit_code_for(status, reasons, returncode, resumable) == code


@pytest.mark.mpi
@pytest.mark.parametrize(
    "launch", [("--ranks", "2"), ("-j", "2", "--backend", "process_pool")], ids=["mpi", "pool"]
)
def test_a_worker_raising_outside_an_index_still_runs_the_end(
    tmp_path: Path, launch: tuple[str, ...]
) -> None:
    (tmp_path / "p.py").write_text(EXITER)
    d = tmp_path / "run"
    proc = cli("run", f"{tmp_path}/p.py:full_disk", *launch, "--run-dir", str(d), "-q")
    assert proc.returncode == 3, proc.stderr
    assert "disk full" in proc.stderr and "Traceback" not in proc.stderr
    doc = read_manifest(d)  # the end of the attempt ran: an honest manifest
    assert doc["status"] == "incomplete" and doc["counts"]["ok"] == 0
