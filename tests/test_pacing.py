"""Commit pacing (pacing.py): the ranks of a large job space their commits; small jobs do not."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from hpc_curator.engine import pacing, rank
from hpc_curator.engine.values import Plan, RunSettings
from hpc_curator.model.pipeline import Pipeline, Sink, Source
from hpc_curator.runtime.world import World
from hpc_curator.store import rundir
from tests.conftest import journal_file


def test_interval_grows_with_the_writers_and_is_off_for_small_jobs() -> None:
    assert pacing.interval(2, 200) == 0.0  # a laptop or a few nodes: nothing changes
    assert pacing.interval(199, 200) == 0.0
    assert pacing.interval(65_536, 200) == pytest.approx(327.68)
    assert pacing.interval(65_536, 0) == 0.0  # HPC_CURATOR_COMMIT_RATE=0: off
    offsets = [pacing.first_offset(r, 100.0) for r in range(1000)]
    assert all(0 <= o < 100 for o in offsets)
    counts, _ = np.histogram(offsets, bins=10, range=(0, 100))
    assert counts.min() >= 95  # spread evenly: ranks started together commit apart


class Slow(Source, Sink):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, index: int) -> Iterator[dict[str, int]]:
        time.sleep(self.seconds)
        yield {"index": index}

    def __call__(self, items: Iterator[Any], index: int) -> list[str]:
        list(items)
        return []


def _run(path: Path, size: int, monkeypatch: pytest.MonkeyPatch, rate: str) -> list[dict]:
    """Rank 1 of a ``size``-rank job runs its 30 indices (0.05 s each, commit every 2)."""
    monkeypatch.setenv(pacing.RATE_ENV, rate)
    rd = rundir.RunDir(path)
    for d in (rd.journal_dir, rd.logs_dir):
        d.mkdir(parents=True, exist_ok=True)
    plan = Plan(str(path), 1, {}, os.getcwd(), np.arange(30 * size, dtype=np.int64), 30 * size,
                0, 0, RunSettings(commit_every=2, fsync=False))  # fmt: skip
    summary = rank.work(plan, World(1, size), pipeline=Pipeline(Slow(0.05)).write(Slow(0)))
    assert summary["ok"] == 30
    lines = journal_file(path, 1, 1).read_bytes().splitlines()
    return [r for r in map(orjson.loads, lines) if r["t"] == "commit"]


def test_a_large_job_commits_at_its_pace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 150 writers at 100 commits/s: 1.5 s between commits, the first after 0.93 s (rank 1)
    paced = _run(tmp_path / "paced", 150, monkeypatch, "100")
    assert 2 <= len(paced) <= 4, [len(c["idx"]) for c in paced]  # 4: a very loaded machine
    assert sorted(i for c in paced for i in c["idx"]) == list(range(1, 30 * 150, 150))[:30]
    free = _run(tmp_path / "free", 150, monkeypatch, "0")  # pacing off: every 2 indices
    assert len(free) == 15
