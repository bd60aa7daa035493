"""Journal scans: the cut-off ``"out"`` member, parsed in one pass by Arrow, stays exact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpc_curator.store import journal
from hpc_curator.store.rundir import RunDir

NASTY = [
    '/data/a "quoted" name.h5',
    '/data/],"seg":{"x":1}.h5',  # looks like a member boundary, but is inside a string
    "/data/ünïcödé/日本.h5",
    "/data/back\\slash\nnewline.h5",
]


def commit(seq: int, idx: list[int], out: list[list[str]], **extra: Any) -> dict[str, Any]:
    n = len(idx)
    rec: dict[str, Any] = {
        "t": "commit",
        "seq": seq,
        "time": 1.0 + seq,
        "idx": idx,
        "ok": [1] * n,
        "wall": [0.1] * n,
        "cpu": [0.1] * n,
        "rss": [1] * n,
        **extra,
    }
    rec["out"] = out
    return rec


def write_journal(rd: RunDir, name: str, records: list[dict[str, Any]], raw: bytes = b"") -> None:
    rd.journal_dir.mkdir(parents=True, exist_ok=True)
    data = b"".join(journal.dumps(r) for r in records) + raw
    (rd.journal_dir / name).write_bytes(data)


def test_outputs_round_trip_through_the_arrow_reader(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    outs = [[p] for p in NASTY] + [[], [NASTY[0], NASTY[1]]]
    write_journal(
        rd,
        "a0001-rank00000.jsonl",
        [commit(0, [0, 1, 2], outs[:3]), commit(1, [3, 4, 5], outs[3:])],
    )
    write_journal(rd, "a0001-rank00001.jsonl", [commit(0, [6], [["/x/6.h5"]])])
    scan = journal.scan(rd)
    assert scan.outputs == [*outs, ["/x/6.h5"]]
    assert len(scan.outputs_array()) == len(scan.idx) == 7
    assert journal.scan(rd, with_outputs=False).outputs is None


def test_members_after_out_are_not_lost(tmp_path: Path) -> None:
    """A writer that does not put "out" last: its line is parsed whole, nothing is cut."""
    rd = RunDir(tmp_path)
    rec = {
        "t": "commit",
        "seq": 0,
        "idx": [0, 1],
        "ok": [1, 0],
        "wall": [0.1, 0.1],
        "cpu": [0.1, 0.1],
        "rss": [1, 1],
        "out": [["/o/0.h5"], []],
        "err": {"1": {"type": "ValueError", "msg": "bad", "tb": "Traceback"}},
        "seg": {"stats": "stats.seg.h5"},
    }
    write_journal(rd, "a0001-rank00000.jsonl", [], (json.dumps(rec) + "\n").encode())
    for with_outputs in (True, False):
        scan = journal.scan(rd, with_outputs=with_outputs)
        assert scan.errors[1]["type"] == "ValueError"
        assert scan.segments == {"stats": ["stats.seg.h5"]}
    assert journal.scan(rd).outputs == [["/o/0.h5"], []]
    records, torn = journal.read_records(rd.journal_dir / "a0001-rank00000.jsonl")
    assert torn == 0 and records[0]["err"] and records[0]["out"]


def test_an_unreadable_out_member_keeps_positions_aligned(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    good = journal.dumps(commit(0, [0, 1], [["/a"], ["/b"]]))
    bad = journal.dumps(commit(1, [2, 3], [["/c"], ["/d"]])).replace(b'"/c"', b'"/c"x')
    short = journal.dumps(commit(2, [4, 5], [["/e"]]))  # one list for two indices
    write_journal(rd, "a0001-rank00000.jsonl", [], good + bad + short)
    scan = journal.scan(rd)
    assert scan.idx.tolist() == [0, 1, 2, 3, 4, 5]
    assert scan.outputs == [["/a"], ["/b"], [], [], [], []]


def test_torn_last_line_is_still_skipped(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    line = journal.dumps(commit(1, [2], [["/c"]]))
    write_journal(rd, "a0001-rank00000.jsonl", [commit(0, [0, 1], [["/a"], ["/b"]])], line[:-5])
    scan = journal.scan(rd)
    assert scan.torn == {"a0001-rank00000.jsonl": 1}
    assert scan.outputs == [["/a"], ["/b"]]
    np.testing.assert_array_equal(scan.idx, [0, 1])


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single(tmp_path: Path, n: int) -> None:
    rd = RunDir(tmp_path)
    write_journal(rd, "a0001-rank00000.jsonl", [commit(0, list(range(n)), [["/p"]] * n)])
    assert journal.scan(rd).outputs == [["/p"]] * n
