"""Write-behind publishing: deferred outputs are durable before their index is committed.

The failing outputs here are real kernel errors, not mocks: a temporary that is a symlink to
``/dev/null`` makes the background ``fsync`` fail with ``EINVAL``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpc_curator import Pipeline, Sink
from hpc_curator.api import run_pipeline
from hpc_curator.components import FieldStats, HDF5Sink, SyntheticSource
from hpc_curator.engine.writebehind import MAX_PENDING, Publisher
from hpc_curator.store import atomic
from tests.conftest import assert_stats_equal, manifest_rows, read_manifest, stats


def temps(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(atomic.TMP_PREFIX)]


def test_deferred_outputs_are_in_place_after_drain_in_submission_order(tmp_path: Path) -> None:
    with Publisher() as pub:
        for k in range(3 * MAX_PENDING):  # more than the queue holds: submit waits, loses none
            pub.tag = k
            with atomic.atomic_path(tmp_path / f"{k % 5}.txt", defer=True) as tmp:
                tmp.write_text(str(k))
        assert pub.drain() == []
        # the last write of each name wins: the thread renames in submission order
        last = {k % 5: k for k in range(3 * MAX_PENDING)}
        assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
            f"{name}.txt": str(k) for name, k in last.items()
        }
        assert any(t.name == "hpc-curator-write-behind" for t in threading.enumerate())
    assert not any(t.name == "hpc-curator-write-behind" for t in threading.enumerate())
    assert temps(tmp_path) == []


def test_defer_is_inline_without_an_active_publisher(tmp_path: Path) -> None:
    with atomic.atomic_path(tmp_path / "a.txt", defer=True) as tmp:
        tmp.write_text("x")
    assert (tmp_path / "a.txt").read_text() == "x"  # at once: nobody would finish it later
    with Publisher():
        pass
    with atomic.atomic_path(tmp_path / "b.txt", defer=True) as tmp:
        tmp.write_text("y")
    assert (tmp_path / "b.txt").read_text() == "y"  # the publisher's exit restored inline


def test_an_output_the_disk_refuses_is_reported_with_its_index(tmp_path: Path) -> None:
    with Publisher() as pub:
        pub.tag = 4
        with atomic.atomic_path(tmp_path / "good.h5", defer=True) as tmp:
            tmp.write_bytes(b"ok")
        pub.tag = 5
        with atomic.atomic_path(tmp_path / "bad.h5", defer=True) as tmp:
            os.symlink("/dev/null", tmp)  # fsync(2) of a character device: EINVAL
        unkept = pub.drain()
        assert [(u.tag, Path(u.path).name, u.type) for u in unkept] == [(5, "bad.h5", "OSError")]
        assert "Invalid argument" in unkept[0].msg and "fsync" in unkept[0].tb
        assert pub.drain() == []  # reported once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.h5"]  # no temporary left


class RefusedSink(Sink):
    """HDF5Sink whose output of index ``at`` cannot be made durable (while ``flag`` exists)."""

    def __init__(self, out_dir: str, at: int, flag: str) -> None:
        self.inner = HDF5Sink(out_dir)
        self.out_dir, self.at, self.flag = Path(out_dir), at, flag

    def __call__(self, items: Iterator[Any], index: int) -> list[str]:
        if index != self.at or not os.path.exists(self.flag):
            return self.inner(items, index)
        for _ in items:
            pass
        path = self.out_dir / f"{index:08d}.h5"
        with atomic.atomic_path(path, defer=True) as tmp:
            os.symlink("/dev/null", tmp)
        return [str(path)]


def pipeline(tmp: Path, *, stateful: bool, flag: Path) -> Pipeline:
    p = Pipeline(SyntheticSource(n=12, shape=(4, 3), fields=("u",)))
    if stateful:
        p = p.filter(FieldStats(name="stats"))
    return p.write(RefusedSink(str(tmp / "out"), at=6, flag=str(flag)))


def test_only_the_index_whose_output_was_lost_fails(tmp_path: Path) -> None:
    flag = tmp_path / "refuse"
    flag.touch()
    out = run_pipeline(
        pipeline(tmp_path, stateful=False, flag=flag), run_dir=tmp_path / "r", commit_every=4
    )
    assert out.result.exit_code == 1
    rows = {r["index"]: r for r in manifest_rows(tmp_path / "r")}
    assert [i for i, r in rows.items() if r["status"] != "ok"] == [6]
    assert rows[6]["error_type"] == "OSError" and "not kept" in rows[6]["error_message"]
    assert rows[6]["outputs"] == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"{i:08d}.h5" for i in range(12) if i != 6
    ]


def test_with_stateful_filters_the_whole_commit_fails_and_retry_counts_once(
    tmp_path: Path,
) -> None:
    flag = tmp_path / "refuse"
    flag.touch()
    run = tmp_path / "r"
    out = run_pipeline(pipeline(tmp_path, stateful=True, flag=flag), run_dir=run, commit_every=4)
    assert out.result.exit_code == 1
    rows = {r["index"]: r for r in manifest_rows(run)}
    failed = sorted(i for i, r in rows.items() if r["status"] != "ok")
    assert failed == [4, 5, 6, 7]  # index 6's commit: its delta held all four
    assert rows[6]["error_type"] == "OSError"
    assert {rows[i]["error_type"] for i in (4, 5, 7)} == {"OutputNotKept"}
    assert "index 6" in rows[5]["error_message"]
    assert stats(run)["u"]["count"] == 8 * 12  # the dropped delta is not counted

    flag.unlink()
    again = run_pipeline(
        pipeline(tmp_path, stateful=True, flag=flag), run_dir=run, retry_failed=True
    )
    assert again.result.exit_code == 0
    assert read_manifest(run)["counts"] == {"total": 12, "ok": 12, "failed": 0, "pending": 0}
    clean = tmp_path / "clean"
    run_pipeline(pipeline(tmp_path / "c", stateful=True, flag=flag), run_dir=clean)
    assert_stats_equal(stats(run), stats(clean))  # every index counted exactly once


@pytest.mark.parametrize("backend", ["process_pool", "loky"])
def test_pool_workers_publish_behind_too(tmp_path: Path, backend: str) -> None:
    flag = tmp_path / "refuse"
    flag.touch()
    out = run_pipeline(
        pipeline(tmp_path, stateful=False, flag=flag),
        n_jobs=2,
        backend=backend,
        run_dir=tmp_path / "r",
        commit_every=3,
    )
    assert out.result.exit_code == 1
    rows = manifest_rows(tmp_path / "r")
    assert [r["index"] for r in rows if r["status"] != "ok"] == [6]
    assert len(list((tmp_path / "out").iterdir())) == 11 and temps(tmp_path / "out") == []


def test_files_written_in_place_are_synced_behind_and_never_removed(tmp_path: Path) -> None:
    chunk, device = tmp_path / "c0", tmp_path / "dev"
    chunk.write_bytes(b"sample")
    os.symlink("/dev/null", device)
    atomic.make_durable(chunk, defer=True)  # no publisher: inline
    with Publisher() as pub:
        pub.tag = 2
        atomic.make_durable(chunk, defer=True)
        pub.tag = 3
        atomic.make_durable(device, defer=True)
        unkept = pub.drain()
    assert [(u.tag, u.type) for u in unkept] == [(3, "OSError")]
    assert chunk.read_bytes() == b"sample" and device.is_symlink()  # in place: not removed


def test_a_forked_child_finishes_its_outputs_itself(tmp_path: Path) -> None:
    # user code may fork inside an index; the child has no write-behind thread to wait for
    with Publisher() as pub:
        with atomic.atomic_path(tmp_path / "parent.txt", defer=True) as tmp:
            tmp.write_text("p")
        pid = os.fork()
        if pid == 0:  # the child: write, exit without any cleanup of the parent's
            try:
                with atomic.atomic_path(tmp_path / "child.txt", defer=True) as tmp:
                    tmp.write_text("c")
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert (tmp_path / "child.txt").read_text() == "c"  # in place before any drain
        assert pub.drain() == []
    assert (tmp_path / "parent.txt").read_text() == "p" and temps(tmp_path) == []
