"""Blocks of journals read apart and joined give exactly the scan of all of them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpc_curator.store import journal
from hpc_curator.store.journalread import read_block
from hpc_curator.store.rundir import RunDir
from tests.test_journal import commit, write_journal


def _start(attempt: int, rank: int) -> dict[str, Any]:
    return {"t": "start", "attempt": attempt, "rank": rank, "host": f"h{rank}", "pid": 100 + rank}


def _failed(seq: int, idx: list[int], bad: int, **extra: Any) -> dict[str, Any]:
    rec = commit(seq, idx, [[f"/o/{i}.h5"] for i in idx], **extra)
    rec["ok"] = [0 if i == bad else 1 for i in idx]
    pos = idx.index(bad)
    rec["err"] = {str(pos): {"type": "ValueError", "msg": f"bad {bad}", "tb": "Traceback"}}
    rec["out"][pos] = []
    rec["out"] = rec.pop("out")  # "out" stays the last member
    return rec


def _run_dir(tmp_path: Path) -> RunDir:
    """Two attempts of three ranks, with everything a scan must carry across journals."""
    rd = RunDir(tmp_path)
    seg = {"seg": {"stats": "s.a1.r0.0.h5"}, "segsum": {"stats": [10, "ab" * 32]}}
    stage = {"stage": [[0.1, 0.2], [0.3, 0.4]]}
    write_journal(
        rd,
        "a0001-rank00000.jsonl",
        [_start(1, 0), commit(0, [0, 3], [["/o/0.h5"], ["/o/3.h5"]], **seg, **stage)],
        raw=b'{"t":"commit","seq":1,"idx":[6',  # torn last line
    )
    repeated = commit(0, [1, 4], [["/o/1.h5"], []], pymem=[5.0, 6.0])
    write_journal(
        rd,
        "a0001-rank00001.jsonl",
        [_start(1, 1), repeated, repeated, {"t": "end", "reason": "done"}],
    )
    malformed = commit(1, [8, 8], [[], []])  # an index named twice
    write_journal(rd, "a0001-rank00002.jsonl", [_start(1, 2), _failed(0, [2, 5], bad=5), malformed])
    seg2 = {"seg": {"stats": "s.a2.r0.0.h5"}, "segsum": {"stats": [11, "cd" * 32]}}
    write_journal(
        rd,
        "a0002-rank00000.jsonl",
        [_start(2, 0), _failed(0, [5, 6], bad=6, **seg2), commit(1, [7], [["/o/7.h5"]])],
    )
    write_journal(rd, "a0002-rank00001.jsonl", [_start(2, 1), commit(0, [8], [["/o/8.h5"]])])
    rd.invalidations_dir.mkdir(parents=True, exist_ok=True)  # attempt 2, rank 0, seq 1
    (rd.invalidations_dir / "0001.json").write_text(json.dumps({"records": [[2, 0, 1]]}))
    return rd


def _same(a: journal.JournalScan, b: journal.JournalScan) -> None:
    for name, value in vars(a).items():
        other = getattr(b, name)
        if name.startswith("_"):
            continue
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype, name
            assert np.array_equal(value, other, equal_nan=value.dtype.kind == "f"), name
        elif name == "stage_records":
            assert [(n, None if s is None else np.asarray(s).tolist()) for n, s in value] == [
                (n, None if s is None else np.asarray(s).tolist()) for n, s in other
            ]
        else:
            assert value == other, name
    if a.raw_outputs is not None:
        assert a.outputs == b.outputs


@pytest.mark.parametrize("with_outputs", [True, False])
def test_any_journals_read_apart_join_into_the_same_scan(
    tmp_path: Path, with_outputs: bool
) -> None:
    rd = _run_dir(tmp_path)
    whole = journal.scan(rd, with_outputs=with_outputs)
    assert whole.torn == {"a0001-rank00000.jsonl": 1}
    assert whole.duplicates == {"a0001-rank00001.jsonl": 1}
    assert len(whole.bad) == 1 and "twice" in whole.bad[0]["reason"]
    assert 7 not in whole.idx.tolist()  # invalidated
    drops = journal.dropped_records(rd)
    files = rd.journal_files()
    for k in range(1, len(files) + 1):
        for chosen in itertools.combinations(files, k):
            blocks = {p.name: read_block([p], drops, with_outputs) for p in chosen}
            _same(whole, journal.scan(rd, with_outputs=with_outputs, blocks=blocks))


def test_a_block_without_outputs_does_not_join_a_scan_with_them(tmp_path: Path) -> None:
    rd = _run_dir(tmp_path)
    path = rd.journal_files()[0]
    blocks = {path.name: read_block([path], set(), with_outputs=False)}
    with pytest.raises(ValueError, match="without outputs"):
        journal.scan(rd, blocks=blocks)


def test_a_rank_reads_its_own_journal_unless_its_node_is_oversubscribed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from hpc_curator import Pipeline
    from hpc_curator.api import run_pipeline
    from hpc_curator.components import SyntheticSource
    from hpc_curator.engine.gather import own_journal

    d = tmp_path / "run"
    run_pipeline(Pipeline(SyntheticSource(n=12, shape=(2,), fields=("u",))), run_dir=d)
    plan = SimpleNamespace(total=12, run_dir=str(d), attempt=1)
    world = SimpleNamespace(size=2, rank=0)
    monkeypatch.setenv("MPI_LOCALNRANKS", "1")
    (path,) = RunDir(d).journal_files()
    writer = RunDir.journal_writer(path)
    name, block = own_journal(world, plan, writer)  # type: ignore[arg-type,misc]
    assert name == path.name == f"a0001-rank00000-w{writer}.jsonl" and len(writer) == 8
    _same(journal.scan(RunDir(d)), journal.scan(RunDir(d), blocks={name: block}))
    assert own_journal(world, plan, None) is None  # type: ignore[arg-type]
    monkeypatch.setenv("MPI_LOCALNRANKS", "100000")  # more ranks than CPUs on this node
    assert own_journal(world, plan, writer) is None  # type: ignore[arg-type]
    monkeypatch.delenv("MPI_LOCALNRANKS")
    assert own_journal(SimpleNamespace(size=1, rank=0), plan, writer) is None  # type: ignore[arg-type]
    big = SimpleNamespace(total=10**9, run_dir=str(d), attempt=1)
    assert own_journal(world, big, writer) is None  # type: ignore[arg-type]
