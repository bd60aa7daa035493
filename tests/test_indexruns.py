"""A pending list as runs (``IndexRuns``): every operation equals the array's, and a plan
for 10^7 indices is kilobytes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc_curator.model import indexruns
from hpc_curator.model.indexruns import IndexRuns, as_array, compact
from hpc_curator.model.partition import slice_for


@st.composite
def index_lists(draw: st.DrawFn) -> np.ndarray:
    """Unique indices made of a few arithmetic pieces (as pending lists are), any order."""
    pieces = draw(st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 5),
                                     st.integers(1, 40)), min_size=1, max_size=8))  # fmt: skip
    parts = [np.arange(s, s + st_ * n, st_) for s, st_, n in pieces]
    a = np.concatenate(parts).astype(np.int64)
    _, first = np.unique(a, return_index=True)
    a = a[np.sort(first)]  # unique, order kept
    if draw(st.booleans()):
        a = a[::-1].copy()
    return a


@settings(max_examples=300, deadline=None)
@given(index_lists(), st.data())
def test_runs_give_what_the_array_gives(a: np.ndarray, data: st.DataObject) -> None:
    runs = compact(a, min_gain=1)
    assert isinstance(runs, IndexRuns) or len(a) < 2
    if not isinstance(runs, IndexRuns):
        return
    n = len(a)
    assert len(runs) == n
    assert np.array_equal(runs.to_array(), a)
    lo = data.draw(st.integers(-n - 2, n + 2))
    hi = data.draw(st.integers(-n - 2, n + 2))
    assert np.array_equal(runs[lo:hi], a[lo:hi])
    assert np.array_equal(runs[lo:], a[lo:])
    size = data.draw(st.integers(1, 9))
    rank = data.draw(st.integers(0, size - 1))
    assert np.array_equal(runs.strided(rank, size), a[rank::size])
    for schedule in ("strided", "block"):
        assert np.array_equal(
            slice_for(runs, rank, size, schedule), slice_for(a, rank, size, schedule)
        )
    again = pickle.loads(pickle.dumps(runs))
    assert np.array_equal(again.to_array(), a)
    block = indexruns.BLOCK
    try:  # read in blocks of a few indices: the same runs
        indexruns.BLOCK = data.draw(st.integers(1, 9))
        small = compact(a, min_gain=1)
    finally:
        indexruns.BLOCK = block
    assert isinstance(small, IndexRuns)
    for name in ("starts", "steps", "lengths"):
        assert np.array_equal(getattr(small, name), getattr(runs, name))


def test_compact_keeps_an_array_that_runs_would_not_shrink() -> None:
    rng = np.random.default_rng(0)
    scattered = np.sort(rng.choice(10**6, 5_000, replace=False))
    assert compact(scattered) is not None and not isinstance(compact(scattered), IndexRuns)
    assert as_array(compact(scattered)) is not None
    assert np.array_equal(as_array(compact(scattered)), scattered)
    with pytest.raises(TypeError):
        compact(np.arange(1000))[::2]  # type: ignore[index]


def test_a_fresh_and_a_resumed_pending_list_are_small() -> None:
    fresh = compact(np.arange(10**7, dtype=np.int64))
    assert isinstance(fresh, IndexRuns) and len(fresh.starts) == 1
    assert len(pickle.dumps(fresh)) < 2_000  # the array: 80 MB
    # a resume after 64 strided ranks stopped at different points of their shares
    size, n = 64, 10**6
    done = np.concatenate([np.arange(r, n, size)[: (r * 97) % 9_000] for r in range(size)])
    pending = np.setdiff1d(np.arange(n), done)
    runs = compact(pending)
    assert isinstance(runs, IndexRuns), len(pending)
    assert len(pickle.dumps(runs)) < len(pending) * 8 // 16
    for rank in (0, 17, 63):
        assert np.array_equal(runs.strided(rank, size), pending[rank::size])


def test_the_plan_every_rank_receives_is_kilobytes(tmp_path: Path) -> None:
    """A fresh run of 10^6 indices: the pickled plan
    (what MPI broadcasts and ``plan.pkl`` holds) is KB, and it names the same indices."""
    from hpc_curator.engine.attempt import begin
    from hpc_curator.engine.values import RunSettings
    from hpc_curator.model.spec import make_spec
    from tests.conftest import FIXTURE_PIPELINES

    spec = make_spec(f"{FIXTURE_PIPELINES}:stats", {"n": "1000000"})
    plan, _ = begin(tmp_path / "run", RunSettings(), {"rank": 0, "size": 1}, spec=spec)
    assert isinstance(plan.pending, IndexRuns) and len(plan.pending) == 10**6
    assert len(pickle.dumps(plan)) < 10_000
    assert np.array_equal(as_array(plan.pending), np.arange(10**6))
