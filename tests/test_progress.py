"""Live progress: the incremental journal model, stale ranks, LiveView and ProgressView."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpc_curator.store import attempt_records, journal, manifest, rundir
from hpc_curator.ui import follow
from hpc_curator.ui.console import LiveView, ProgressView
from hpc_curator.ui.progress import STALE_FLOOR, ProgressModel
from tests.conftest import FIXTURE_PIPELINES, read_manifest

N_BIG = 10**6
N_JOURNALS = 16
BATCH = 2500
SPEC = {"kind": "factory", "ref": "tests/pipelines.py:stats", "params": {}}
IDENTITY = {"host": socket.gethostname(), "node": "n0", "pid": os.getpid(), "job_id": None}


class FakeTTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def new_run(tmp_path: Path, n: int, commit_seconds: float = 30.0) -> rundir.RunDir:
    rd = rundir.RunDir(tmp_path / "run")
    rundir.create_or_open(rd, SPEC, np.arange(n), {"commit_seconds": commit_seconds})
    assert attempt_records.start_attempt(rd, IDENTITY, "test") == 1
    return rd


def start_rec(rank: int, t: float, attempt: int = 1, size: int = N_JOURNALS) -> dict[str, Any]:
    rec = {"t": "start", "attempt": attempt, "time": t, "rank": rank, "size": size}
    return {**rec, **IDENTITY, "node": f"n{rank % 4}"}


def commit_record(
    seq: int, t: float, idx: list[int], failed: dict[int, str] | None = None
) -> dict[str, Any]:
    failed = failed or {}
    return {
        "t": "commit",
        "seq": seq,
        "time": t,
        "idx": idx,
        "ok": [0 if i in failed else 1 for i in idx],
        "wall": [0.01] * len(idx),
        "cpu": [0.01] * len(idx),
        "rss": [1 << 20] * len(idx),
        "out": [[] for _ in idx],
        "err": {
            str(p): {"type": failed[i], "msg": f"bad {i}", "tb": "Traceback ..."}
            for p, i in enumerate(idx)
            if i in failed
        },
        "seg": {},
    }


def write_big_journals(rd: rundir.RunDir, t0: float) -> None:
    """Commit every index but the last, strided over 16 journals, in the journal line format."""
    rd.journal_dir.mkdir(exist_ok=True)
    const = {  # the constant columns of a full batch, serialised once
        key: json.dumps(value, separators=(",", ":"))
        for key, value in {
            "ok": [1] * BATCH,
            "wall": [0.01] * BATCH,
            "cpu": [0.01] * BATCH,
            "rss": [1 << 20] * BATCH,
            "out": [[]] * BATCH,
        }.items()
    }
    everything = np.arange(N_BIG - 1)
    for rank in range(N_JOURNALS):
        mine = everything[rank::N_JOURNALS]
        lines = [json.dumps(start_rec(rank, t0)) + "\n"]
        for seq, lo in enumerate(range(0, len(mine), BATCH)):
            idx = mine[lo : lo + BATCH]
            cols = (
                const
                if len(idx) == BATCH
                else {k: json.dumps(json.loads(v)[: len(idx)]) for k, v in const.items()}
            )
            lines.append(
                f'{{"t":"commit","seq":{seq},"time":{t0 + seq + 1},'
                f'"idx":{json.dumps(idx.tolist())},"ok":{cols["ok"]},"wall":{cols["wall"]},'
                f'"cpu":{cols["cpu"]},"rss":{cols["rss"]},"out":{cols["out"]},'
                '"err":{},"seg":{}}\n'
            )
        rd.journal_path(1, rank, "00000000").write_text("".join(lines))


def append(rd: rundir.RunDir, attempt: int, rank: int, *records: dict[str, Any]) -> None:
    """Append records to one journal with the journal's own writer."""
    w = journal.JournalWriter(rd.journal_path(attempt, rank, "00000000"), fsync=False)
    for rec in records:
        w.append(rec)
    w.close()


class CountingFile:
    """Wraps a binary file and adds every byte read to ``counter``."""

    def __init__(self, fh: Any, counter: list[int]) -> None:
        self.fh, self.counter = fh, counter

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()

    def seek(self, offset: int) -> int:
        return self.fh.seek(offset)

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.counter.append(len(data))
        return data


def test_refresh_reads_only_new_bytes_with_a_million_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rd = new_run(tmp_path, N_BIG)
    t0 = 1_700_000_000.0
    write_big_journals(rd, t0)
    model = ProgressModel(rd.path)
    model.poll()
    t = model.snapshot().totals
    assert (t.total, t.done, t.failed, t.pending, t.baseline, t.new) == (
        N_BIG,
        N_BIG - 1,
        0,
        1,
        N_BIG - 1,
        0,
    )
    sizes = {p: p.stat().st_size for p in rd.journal_files()}
    assert model.follower._offsets == sizes  # everything consumed once

    target = rd.journal_path(1, N_JOURNALS - 1, "00000000")
    writer = open(target, "ab")  # opened before open() is spied on (a writer's new file)

    # From now on nothing may re-read whole journals or the index list.
    def forbidden(*_a: Any, **_k: Any) -> None:
        raise AssertionError("a refresh must not re-read whole journals or run.json indices")

    for mod, name in ((journal, "scan"), (journal, "read_records"), (rundir, "load")):
        monkeypatch.setattr(mod, name, forbidden)
    reads: list[int] = []
    real_open = open
    for mod in (journal, follow):  # the follower reads through follow.open
        monkeypatch.setattr(
            mod, "open", lambda *a, **k: CountingFile(real_open(*a, **k), reads), raising=False
        )

    assert model.poll() == 0 and sum(reads) == 0  # nothing new: no byte read

    writer.write(journal.dumps(commit_record(10**4, t0 + 10**4, [N_BIG - 1])))
    writer.close()
    appended = target.stat().st_size - sizes[target]

    assert model.poll() == 1
    assert sum(reads) == appended
    offsets = model.follower._offsets
    assert offsets[target] == sizes[target] + appended
    assert {p: o for p, o in offsets.items() if p != target} == {
        p: s for p, s in sizes.items() if p != target
    }
    t = model.snapshot().totals
    assert (t.done, t.ok, t.pending, t.new, t.baseline) == (N_BIG, N_BIG, 0, 1, N_BIG - 1)


def test_counts_match_the_manifest_across_retries_and_partial_lines(tmp_path: Path) -> None:
    rd = new_run(tmp_path, 12)
    append(
        rd,
        1,
        0,
        start_rec(0, 100.0, size=1),
        commit_record(0, 101.0, list(range(10)), {3: "ValueError", 7: "KeyError"}),
    )
    model = ProgressModel(rd.path)
    model.poll()
    t = model.snapshot().totals
    assert (t.ok, t.failed, t.pending, t.baseline) == (8, 2, 2, 10)
    # a torn (partial) line is left for the next poll, never counted twice
    with open(rd.journal_path(1, 0, "00000000"), "ab") as fh:
        fh.write(b'{"t":"commit","seq":1,')
    assert model.poll() == 0
    # attempt 2 retries the failures: 3 now succeeds, 7 fails again; 10 runs for the first time
    append(
        rd,
        2,
        0,
        start_rec(0, 200.0, attempt=2, size=1),
        commit_record(0, 201.0, [3, 7, 10], {7: "KeyError"}),
    )
    model.poll()
    snap = model.snapshot()
    doc = manifest.summarize(rd, journal.scan(rd))
    t = snap.totals
    assert {"total": t.total, "ok": t.ok, "failed": t.failed, "pending": t.pending} == doc["counts"]
    assert (t.ok, t.failed, t.pending, t.new) == (10, 1, 1, 1)
    assert [f.index for f in snap.failures] == [7, 7, 3]  # newest first
    assert [(r.attempt, r.rank, r.done, r.failed) for r in snap.rows] == [
        (1, 0, 10, 2),
        (2, 0, 3, 1),
    ]


def test_stale_marker_and_lost_ranks(tmp_path: Path) -> None:
    rd = new_run(tmp_path, 100)
    now = [1000.0]
    # rank 0 commits every 10 s (threshold = max(3 * 10, 60) = 60 s), rank 1 every 100 s (300 s)
    for rank, times in ((0, [1010.0, 1020.0, 1030.0]), (1, [1100.0, 1200.0])):
        commits = [commit_record(seq, t, [rank * 50 + seq]) for seq, t in enumerate(times)]
        append(rd, 1, rank, start_rec(rank, 1000.0, size=3), *commits)
    end = {"t": "end", "ended": 1011.0, "reason": "done"}
    append(rd, 1, 2, start_rec(2, 1000.0, size=3), commit_record(0, 1010.0, [99]), end)
    model = ProgressModel(rd.path, clock=lambda: now[0])
    model.poll()

    now[0] = 1030.0 + STALE_FLOOR - 1
    rows = {r.rank: r for r in model.snapshot().rows}
    assert [rows[r].state for r in range(3)] == ["running", "running", "done"]
    assert rows[0].stale_after == STALE_FLOOR and rows[1].stale_after == 300.0

    now[0] = 1030.0 + STALE_FLOOR + 1
    snap = model.snapshot()
    rows = {r.rank: r for r in snap.rows}
    assert rows[0].stale and rows[0].since_commit == pytest.approx(STALE_FLOOR + 1)
    assert not rows[1].stale and not rows[2].stale
    assert snap.attempt_state == "running" and not model.attempt_over()

    attempt_records.end_attempt(
        rd, 1, reason="done"
    )  # the attempt ended: no rank is "stale" any more
    model.poll()
    rows = {r.rank: r for r in model.snapshot().rows}
    assert [rows[r].state for r in range(3)] == ["lost", "lost", "done"]
    assert model.attempt_over()


def test_live_view_follows_a_real_run_until_its_attempt_ends(tmp_path: Path) -> None:
    d = tmp_path / "run"
    out = io.StringIO()
    view = LiveView(d, interval=0.1, stream=out)
    assert view.model.attempt_state() == "waiting"  # the run dir does not exist yet
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "hpc_curator", "run", f"{FIXTURE_PIPELINES}:stats"),
            *("-p", "n=40", "-p", "fail=3,7", "-p", "sleep=0.02", "--run-dir", str(d)),
            *("--backend", "process_pool", "-j", "2", "--commit-every", "4", "-q"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    try:  # the default predicate, plus a deadline so that a broken launcher cannot hang us
        assert view.run_until(lambda: view.model.attempt_over() or time.monotonic() > deadline)
    finally:
        _, err = proc.communicate(timeout=60)
    assert view.model.attempt_over(), err
    assert proc.returncode == 1, err  # indices 3 and 7 fail on purpose
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2 and lines[0][:4].isdigit()
    assert "40/40 done (38 ok, 2 failed, 0 pending)" in lines[-1]
    assert "attempt 1 ended" in lines[-1]
    t = view.model.snapshot().totals
    counts = read_manifest(d)["counts"]
    assert {"total": t.total, "ok": t.ok, "failed": t.failed, "pending": t.pending} == counts

    from rich.console import Console

    con = Console(file=io.StringIO(), width=140, record=True)
    con.print(view.render())
    text = con.export_text()
    assert "40/40" in text and "recent failures" in text
    assert "RuntimeError: injected failure at index 7" in text
    assert [r.rank for r in view.model.snapshot().rows] == [0, 1]


def test_live_view_on_a_tty_and_ctrl_c(tmp_path: Path) -> None:
    rd = new_run(tmp_path, 10)
    append(
        rd, 1, 0, start_rec(0, 100.0, size=1), commit_record(0, 101.0, [0, 1, 2, 3], {2: "OSError"})
    )
    before = {p: p.stat().st_mtime_ns for p in rd.path.rglob("*")}

    def interrupt() -> bool:
        raise KeyboardInterrupt

    tty = FakeTTY()
    view = LiveView(rd.path, interval=0.01, stream=tty)
    assert view.run_until(interrupt) is False  # Ctrl-C returns cleanly
    assert "4/10" in tty.getvalue() and "OSError: bad 2" in tty.getvalue()
    plain = LiveView(rd.path, interval=0.01, stream=io.StringIO())
    assert plain.run_until(interrupt) is False
    assert "4/10 done (3 ok, 1 failed, 6 pending)" in plain.stream.getvalue()  # type: ignore[attr-defined]
    assert {p: p.stat().st_mtime_ns for p in rd.path.rglob("*")} == before  # read-only

    attempt_records.end_attempt(rd, 1, reason="done")
    assert LiveView(rd.path, interval=0.01, stream=FakeTTY()).run_until() is True


def test_progress_view_keeps_its_contract_and_shows_ranks(tmp_path: Path) -> None:
    rd = new_run(tmp_path, 10)
    append(rd, 1, 3, start_rec(3, 100.0, size=4), commit_record(0, 101.0, [0, 1, 2]))
    tty = FakeTTY()
    with ProgressView(3, label="mpi", stream=tty, run_dir=rd.path) as view:
        view.on_commit(commit_record(0, 101.0, [0, 1, 2]))
    assert (view.done, view.failed) == (3, 0)
    assert "3/10" in tty.getvalue() and "n3" in tty.getvalue()  # rank 3 on node n3
    plain = io.StringIO()
    with ProgressView(4, label="seq", interval=0.0, stream=plain) as view:
        view.on_commit(commit_record(0, 1.0, [0, 1], {1: "E"}))
    assert "seq: 2/4 done, 1 failed" in plain.getvalue()
    quiet = io.StringIO()
    with ProgressView(4, stream=quiet, enabled=False, run_dir=rd.path) as view:
        view.on_commit(commit_record(0, 1.0, [0]))
    assert quiet.getvalue() == ""
