"""Exactly once as a property of the records: the acceptance rule (hpc_curator/store/ledger.py).

Duplicate writers are real :class:`~hpc_curator.engine.rank.RankLoop` instances writing real
journals
and FieldStats segments into one run dir, in random interleavings of attempts, ranks, claim
generations and index sets (what orphans, hung claimers, requeue races and deleted claim
boards leave behind); a real ``hpc-curate run`` then resumes the run. The merged statistics
must equal a clean run's, every index counted once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpc_curator.engine.attempt import begin
from hpc_curator.engine.rank import RankLoop
from hpc_curator.engine.signals import StopFlag
from hpc_curator.engine.values import RunSettings
from hpc_curator.model import spec as specmod
from hpc_curator.runtime.world import LocalCounter, World
from hpc_curator.store import attempt_records, ledger, rundir
from tests.conftest import (
    FIXTURE_PIPELINES,
    assert_stats_equal,
    cli,
    manifest_rows,
    read_manifest,
    stats,
)

N = 30
SPEC = f"{FIXTURE_PIPELINES}:stats"


def _commit(name: str, seq: int, good: list[int], line: int = 1) -> Any:
    return ledger._Commit(ledger.order_key(name, {"seq": seq}), name, line, np.array(good))


def test_the_rule_is_greedy_in_one_total_order_newest_attempt_first() -> None:
    a1, a2 = "a0001-rank00000-wa.jsonl", "a0002-rank00000-wb.jsonl"
    # a2 comes first (newest attempt): it takes 2 and 3; a1's commit over 1-2 loses whole,
    # so 1 is free for a1's later commit over 1 alone
    verdict = ledger.decide([_commit(a1, 0, [1, 2]), _commit(a1, 1, [1]), _commit(a2, 0, [2, 3])])
    assert verdict.drops == {(a1, 0)}
    assert "index 2 was accepted from a0002-rank00000-wb.jsonl:1" in verdict.report[0]["reason"]
    # a higher claim generation wins within an attempt, whatever the file order
    old = ledger._Commit(ledger.order_key(a1, {"seq": 0, "gen": 0}), a1, 4, np.array([5]))
    new = ledger._Commit(ledger.order_key(a1, {"seq": 3, "gen": 2}), a1, 9, np.array([5]))
    assert ledger.decide([old, new]).drops == {(a1, 0)}
    # no contested index: nothing to decide
    assert not ledger.decide([_commit(a1, 0, [1]), _commit(a2, 0, [2])]).drops


def test_old_journal_names_still_parse() -> None:
    assert rundir.RunDir.parse_journal_name("a0003-rank00017.jsonl") == (3, 17)
    assert rundir.RunDir.journal_writer("a0003-rank00017.jsonl") == ""
    assert rundir.RunDir.parse_journal_name("a0003-rank00017-w0a1b2c3d.jsonl") == (3, 17)
    assert rundir.RunDir.journal_writer("x/a0003-rank00017-w0a1b2c3d.current") == "0a1b2c3d"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("ref") / "run"
    cli("run", SPEC, "-p", f"n={N}", "--run-dir", str(d), "-q", check=True)
    return stats(d)


writer = st.tuples(
    st.integers(0, 2),  # attempt offset (journals of attempts that never had a record too)
    st.integers(0, 2),  # claim generation
    st.integers(0, 1),  # rank
    st.lists(st.integers(0, N - 1), min_size=1, max_size=N, unique=True),
    st.integers(1, 5),  # commit every
)


def _write(d: Path, plan: Any, spec: dict[str, Any], w: tuple[Any, ...]) -> None:
    offset, gen, rank, indices, every = w
    settings_ = dataclasses.replace(plan.settings, commit_every=every, fsync=False)
    mine = dataclasses.replace(
        plan, attempt=plan.attempt + offset, pending=np.array(indices), settings=settings_
    )
    loop = RankLoop(mine, World(rank, 2), specmod.build(spec), LocalCounter(0), StopFlag())
    loop.generation = gen
    loop.run(iter(indices))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(writers=st.lists(writer, min_size=1, max_size=5))
def test_duplicate_writers_in_any_interleaving_count_every_index_once(
    writers: list[tuple[Any, ...]], reference: dict[str, Any], tmp_path_factory: Any
) -> None:
    d = tmp_path_factory.mktemp("dup") / "run"
    spec = specmod.make_spec(SPEC, {"n": str(N)})
    plan, _ = begin(d, RunSettings(), World().identity(), spec=spec, launcher="sequential")
    for w in writers:
        _write(d, plan, spec, w)
    attempt_records.end_attempt(rundir.RunDir(d), plan.attempt, reason="test writers")
    contested = sum(len(w[3]) for w in writers) > len({i for w in writers for i in w[3]})
    resumed = cli("run", SPEC, "-p", f"n={N}", "--run-dir", str(d), "-q")
    assert resumed.returncode == 0, resumed.stderr
    doc = read_manifest(d)
    assert doc["status"] == "complete" and doc["counts"]["ok"] == N
    assert [r["index"] for r in manifest_rows(d)] == list(range(N))
    assert stats(d)["u"]["count"] == N * 64  # each index once in the merged state
    assert_stats_equal(stats(d), reference)
    assert (doc["rejected_commit_count"] > 0) <= contested  # only contested runs reject
    checked = cli("verify", str(d))
    assert checked.returncode == 0, checked.stderr
    if doc["rejected_commit_count"]:
        assert "commit rejected: index" in checked.stderr


def test_a_late_commit_of_an_older_attempt_is_rejected_and_verify_says_the_merge_is_stale(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    d = tmp_path / "run"
    cli("run", SPEC, "-p", f"n={N}", "--run-dir", str(d), "-q", check=True)
    spec = json.loads((d / "run.json").read_text())["spec"]
    rd = rundir.RunDir(d)
    assert cli("verify", str(d)).returncode == 0
    # a zombie of attempt 1 wakes up and commits indices attempt 1 already committed: newest
    # first, so the original commits stand only if they are newer... here the zombie is of
    # the same attempt and rank, with another writer token: the order picks one, whole
    plan = dataclasses.replace(
        _plan_of(d, spec), attempt=2, pending=np.arange(5), settings=RunSettings(commit_every=5)
    )
    loop = RankLoop(plan, World(0, 1), specmod.build(spec), LocalCounter(0), StopFlag())
    loop.run(iter(range(5)))
    checked = cli("verify", str(d))
    assert checked.returncode == 4  # the merged output no longer holds the accepted commits
    assert "does not hold exactly the accepted commits" in checked.stderr
    assert "commit rejected" in checked.stderr
    cli("run", SPEC, "-p", f"n={N}", "--run-dir", str(d), "-q", check=True)  # merges again
    assert cli("verify", str(d)).returncode == 0
    assert stats(d)["u"]["count"] == N * 64
    assert_stats_equal(stats(d), reference)
    assert read_manifest(d)["rejected_commit_count"] == 1
    assert len(rd.journal_files()) == 3


def _plan_of(d: Path, spec: dict[str, Any]) -> Any:
    from hpc_curator.engine.values import Plan

    return Plan(str(d), 1, spec, os.getcwd(), np.arange(N), N, 0, 0, RunSettings())


def test_two_writers_of_one_rank_never_share_a_file(tmp_path: Path) -> None:
    d = tmp_path / "run"
    spec = specmod.make_spec(SPEC, {"n": "6"})
    plan, _ = begin(d, RunSettings(), World().identity(), spec=spec, launcher="sequential")
    loops = [
        RankLoop(plan, World(0, 1), specmod.build(spec), LocalCounter(0), StopFlag())
        for _ in range(2)
    ]
    for loop in loops:
        loop.run(iter(range(6)))
    rd = rundir.RunDir(d)
    names = [p.name for p in rd.journal_files()]
    assert len(names) == 2 and len({rd.journal_writer(n) for n in names}) == 2
    segments = sorted((d / "shards" / "stats").glob("*.h5"))
    assert len(segments) == 2 and segments[0].name != segments[1].name
    from hpc_curator.store import journal

    scan = journal.scan(rd, with_outputs=False)
    assert sorted(scan.idx.tolist()) == list(range(6)) and len(scan.rejected) == 1
    assert sum(len(v) for v in scan.segments.values()) == 1


def test_a_planted_link_at_a_writer_s_file_is_never_followed(tmp_path: Path) -> None:
    from hpc_curator.engine.poison import CurrentIndex
    from hpc_curator.store.journal import JournalWriter

    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    journal_dir = tmp_path / "run" / "journal"
    journal_dir.mkdir(parents=True)
    for name in ("a0001-rank00000-wdeadbeef.jsonl", "a0001-rank00000-wdeadbeef.current"):
        (journal_dir / name).symlink_to(outside)
    with pytest.raises(FileExistsError):
        JournalWriter(journal_dir / "a0001-rank00000-wdeadbeef.jsonl")
    with pytest.raises(FileExistsError):
        CurrentIndex(journal_dir / "a0001-rank00000-wdeadbeef.current")
    assert outside.read_text() == "precious\n"  # neither appended to nor truncated


def test_a_copied_run_dir_verifies_as_itself(tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "run"
    cli("run", SPEC, "-p", "n=12", "--run-dir", str(d), "-q", check=True)
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(d, copy, symlinks=True)
    shutil.rmtree(d)
    checked = cli("verify", str(copy))
    assert checked.returncode == 0, checked.stderr
    out = json.loads((copy / "manifest.json").read_text())["outputs"]["stats"]
    assert out["relative"] == "outputs/stats.h5"
    (copy / "outputs" / "stats.h5").write_bytes(b"damaged")
    assert cli("verify", str(copy)).returncode == 4  # the copy's own file is what is checked


def test_the_rule_holds_when_the_journals_are_read_in_parts(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    """A large run's end and resume read the journals in parts (fold.py): the same verdict."""
    from hpc_curator.store import fold, journal

    d = tmp_path / "run"
    spec = specmod.make_spec(SPEC, {"n": str(N)})
    plan, _ = begin(d, RunSettings(), World().identity(), spec=spec, launcher="sequential")
    for w in [(0, 0, 0, list(range(0, 20)), 4), (0, 1, 1, list(range(10, 30)), 3),
              (1, 0, 0, list(range(25, 5, -1)), 2)]:  # fmt: skip
        _write(d, plan, spec, w)
    attempt_records.end_attempt(rundir.RunDir(d), plan.attempt, reason="test writers")
    rd = rundir.RunDir(d)
    whole = journal.scan(rd)
    assert whole.rejected
    frozen = rundir.load(rd).indices
    status = fold.status(rd, frozen, rows=8)  # N = 30 indices: parts of ~8 rows
    assert status.recorded().tolist() == sorted(set(whole.recorded().tolist()))
    assert status.pending().tolist() == sorted(set(range(N)) - set(whole.recorded().tolist()))
    folded = fold.fold(rd, rows=8)
    assert folded.spilled and dict(folded.segments) == dict(whole.segments)
    assert folded.scan.rejected == whole.rejected
    resumed = cli("run", SPEC, "-p", f"n={N}", "--run-dir", str(d), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert stats(d)["u"]["count"] == N * 64
    assert_stats_equal(stats(d), reference)


LOSES_A_SEGMENT = """
import os
from hpc_curator import Pipeline
from hpc_curator.components import FieldStats, SyntheticSource


class LosesOne(FieldStats):
    '''The second segment's temporary vanishes before its rename (a full disk at fsync, or
    another process's clean-up): the commit fails after the filter flushed its delta.'''

    flushes = 0

    @classmethod
    def write_state(cls, state, path):
        super().write_state(state, path)
        if "/shards/" in path and not os.environ.get("KEEP"):
            LosesOne.flushes += 1
            if LosesOne.flushes == 2:
                os.unlink(path)


def build():
    source = SyntheticSource(n=12, shape=(8, 8), fields=("u",))
    return Pipeline(source).filter(LosesOne(name="stats"))
"""


@pytest.mark.parametrize("launch", [(), ("-j", "2", "--backend", "process_pool")])
def test_a_commit_that_fails_after_the_flush_is_abandoned_whole(
    tmp_path: Path, launch: tuple[str, ...]
) -> None:
    (tmp_path / "p.py").write_text(LOSES_A_SEGMENT)
    d = tmp_path / "run"
    args = ("run", f"{tmp_path}/p.py:build", *launch, "--run-dir", str(d), "--commit-every", "3",
            "-q")  # fmt: skip
    first = cli(*args)
    assert first.returncode == 3, first.stderr  # the end ran; the run is incomplete
    again = cli(*args, env={"KEEP": "1"})
    assert again.returncode == 0, again.stderr
    assert read_manifest(d)["counts"]["ok"] == 12
    assert stats(d)["u"]["count"] == 12 * 64  # the abandoned batch ran again, counted once
