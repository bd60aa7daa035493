"""Index groups stay on one rank: union of constraints, every schedule, real MPI + ZarrSink.

The ZarrSink runs use a chunk of 7 samples over 45 indices (not a multiple), 4 MPI ranks,
strided and dynamic, then a SIGKILL + resume on 3 ranks; the store must equal a sequential
run's bit for bit and the manifest must show every group on one rank in every attempt.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc_curator.model import groups, partition
from tests.conftest import FIXTURE_PIPELINES, assert_stats_equal, cli, manifest_rows, stats

SPEC = f"{FIXTURE_PIPELINES}:zarr_store"
zarr = pytest.importorskip("zarr")


def test_source_and_sink_groups_combine_as_a_union() -> None:
    indices = np.arange(10)
    labels = groups.components(indices, [[0, 1], [2, 3], [1, 2], [5, 6], [8, 99]])
    assert labels is not None
    assert labels.tolist() == [0, 0, 0, 0, 4, 5, 5, 7, 8, 9]  # 99 is not in the run
    assert groups.components(indices, [[4], [7, 70]]) is None  # nothing tied together


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 80),
    size=st.integers(1, 7),
    chunk=st.integers(1, 9),
    pairs=st.lists(st.tuples(st.integers(0, 79), st.integers(0, 79)), max_size=20),
    schedule=st.sampled_from(["strided", "block", "dynamic"]),
    done=st.sets(st.integers(0, 79), max_size=30),
)
def test_every_schedule_hands_out_whole_units_exactly_once(
    n: int, size: int, chunk: int, pairs: list[tuple[int, int]], schedule: str, done: set[int]
) -> None:
    frozen = np.arange(n)[::-1].copy()  # not sorted: positions and values differ
    labels = groups.components(frozen, [list(p) for p in pairs])
    if labels is None:
        return
    pending = np.array([i for i in frozen if i not in done], dtype=np.int64)
    ordered, bounds = groups.plan_units(pending, frozen, labels, schedule)
    if bounds is None:
        assert len(pending) == 0
        return
    if schedule == "dynamic":
        starts = partition.dynamic_bounds(len(ordered), size, chunk, taper=False, units=bounds)
        shares = [ordered[a:b] for a, b in itertools.pairwise(starts)]
        assert set(starts.tolist()) <= set(bounds.tolist())  # a chunk never cuts a unit
    else:
        shares = [groups.share(ordered, bounds, r, size, schedule) for r in range(size)]
    flat = np.concatenate(shares) if shares else np.empty(0)
    assert sorted(flat.tolist()) == sorted(pending.tolist())  # each pending index once
    label_of = dict(zip(frozen.tolist(), labels.tolist(), strict=True))
    owner: dict[int, int] = {}
    for k, part in enumerate(shares):
        for i in part.tolist():
            assert owner.setdefault(label_of[i], k) == k  # a group never spans two shares
    if schedule == "strided" and len(pending):
        loads = [len(s) for s in shares]
        biggest = int(np.diff(bounds).max())
        assert max(loads) - min(loads) <= biggest  # LPT: within the largest unit


def test_mates_of_a_suspect_run_with_it() -> None:
    frozen = np.arange(10)
    labels = groups.components(frozen, [[2, 3, 4]])
    assert labels is not None
    assert groups.mates([3], np.array([0, 1, 2, 4, 5]), frozen, labels).tolist() == [2, 4]


def read_store(path: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(g[name][:]) for name in ("u", "v")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], Any]:
    d = tmp_path_factory.mktemp("ref")
    cli("run", SPEC, "-p", f"store={d / 's.zarr'}", "--run-dir", str(d / "run"), "-q",
        "--backend", "sequential", check=True)  # fmt: skip
    return read_store(d / "s.zarr"), stats(d / "run")


def assert_groups_kept(run_dir: Path, chunk: int = 7) -> dict[int, set[tuple[int, int]]]:
    """Every chunk's indices ran on one rank within each attempt; return their placements."""
    rows = manifest_rows(run_dir)
    placed: dict[tuple[int, int], set[int]] = defaultdict(set)
    for r in rows:
        assert r["group"] == (r["index"] // chunk) * chunk or r["group"] is None
        placed[(r["index"] // chunk, r["attempt"])].add(r["rank"])
    assert all(len(ranks) == 1 for ranks in placed.values()), placed
    by_chunk: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for (c, a), ranks in placed.items():
        by_chunk[c] |= {(a, r) for r in ranks}
    return by_chunk


@pytest.mark.parametrize(
    "extra",
    [
        ["--ranks", "4"],
        ["--ranks", "4", "--schedule", "dynamic", "--chunk-size", "3"],
        ["--ranks", "3", "--schedule", "block"],
        ["-j", "2"],
    ],
)
def test_zarr_sink_is_exact_under_every_schedule(
    tmp_path: Path, reference: tuple[dict[str, np.ndarray], Any], extra: list[str]
) -> None:
    store, d = tmp_path / "s.zarr", tmp_path / "run"
    proc = cli("run", SPEC, "-p", f"store={store}", "--run-dir", str(d), "-q",
               "--commit-every", "3", *extra)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got, want = read_store(store), reference[0]
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    placement = assert_groups_kept(d)
    if "--ranks" in extra:
        assert len({r for p in placement.values() for _, r in p}) > 1  # really spread out
    assert_stats_equal(stats(d), reference[1])
    assert [r["index"] for r in manifest_rows(d)] == list(range(45))


def test_kill_then_resume_on_another_world_size_keeps_chunks_whole(
    tmp_path: Path, reference: tuple[dict[str, np.ndarray], Any]
) -> None:
    store, d = tmp_path / "s.zarr", tmp_path / "run"
    args = ["run", SPEC, "-p", f"store={store}", "-p", "at=30", "-p", "sleep=0.01",
            "--run-dir", str(d), "-q", "--commit-every", "2"]  # fmt: skip
    first = cli(*args, "--ranks", "4")
    assert first.returncode == 3, first.stderr  # a rank was killed: incomplete
    again = cli(*args, "--ranks", "3", env={"HPC_TEST_NO_KILL": "1"})
    assert again.returncode == 0, again.stderr
    got = read_store(store)
    for name, want in reference[0].items():
        np.testing.assert_array_equal(got[name], want)
    assert_groups_kept(d)
    rows = manifest_rows(d)
    assert {r["attempt"] for r in rows} == {1, 2}
    assert_stats_equal(stats(d), reference[1])


def test_source_pairs_and_sink_chunks_join_into_one_group(tmp_path: Path) -> None:
    store, d = tmp_path / "s.zarr", tmp_path / "run"
    # chunks of 7: pairs (0, 13), (10, 23) join chunks 0, 1, 3; (20, 33), (30, 43) join 2, 4, 6
    cli("run", SPEC, "-p", f"store={store}", "-p", "gap=13", "--run-dir", str(d), "-q",
        "--ranks", "3", check=True)  # fmt: skip
    rows = manifest_rows(d)
    for chunks, label in (((0, 1, 3), 0), ((2, 4, 6), 14), ((5,), 35)):
        members = [r for r in rows if r["index"] // 7 in chunks]
        assert {r["group"] for r in members} == {label}
        assert len({r["rank"] for r in members}) == 1


def test_a_run_without_groups_keeps_its_indices_in_numpy() -> None:
    """No component declares groups: no Python int per index (10^8 indices: ~4 GB)."""
    import tracemalloc

    from hpc_curator.model.groups import declared
    from tests.pipelines import stats as stats_pipeline

    pipeline = stats_pipeline(n="1000000")
    indices = np.arange(1_000_000, dtype=np.int64)
    tracemalloc.start()
    try:
        assert declared(pipeline, indices) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak
