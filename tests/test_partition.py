"""Tests of index selection, compression and slicing (pure functions)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc_curator.errors import CuratorError, UsageError
from hpc_curator.model.partition import (
    SCHEDULES,
    TAPER_CHUNKS_PER_RANK,
    check_indices,
    default_chunk_size,
    dynamic_bounds,
    format_indices,
    from_ranges,
    parse_indices,
    pending,
    slice_for,
    to_ranges,
)

FAST = settings(max_examples=100, deadline=None, database=None)


def as_list(a: np.ndarray) -> list[int]:
    return [int(x) for x in a]


# -- parse_indices --------------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "   "])
def test_parse_all(text: str | None) -> None:
    out = parse_indices(text, 7)
    assert out.dtype == np.int64
    assert as_list(out) == list(range(7))


def test_parse_all_of_empty_source() -> None:
    assert as_list(parse_indices(None, 0)) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0:5", [0, 1, 2, 3, 4]),
        ("3", [3]),
        (" 3 , 5 ", [3, 5]),
        ("0:10:3", [0, 3, 6, 9]),
        ("7:", [7, 8, 9]),
        (":3", [0, 1, 2]),
        (":", list(range(10))),
        ("::4", [0, 4, 8]),
        ("1::4", [1, 5, 9]),
        ("0:2,5,8:10", [0, 1, 5, 8, 9]),
        ("9,0:2", [9, 0, 1]),  # order is kept
        ("0:10", list(range(10))),  # stop == n is allowed
    ],
)
def test_parse_selection(text: str, expected: list[int]) -> None:
    out = parse_indices(text, 10)
    assert out.dtype == np.int64
    assert as_list(out) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("-1", "negative|out of range"),
        ("10", "out of range"),
        ("0:11", "goes past"),
        ("-2:5", "negative"),
        ("0:-3", "negative"),
        ("0:5:-1", "negative"),
        ("3,3", "twice"),
        ("0:5,4", "twice"),
        ("a", "cannot parse"),
        ("1.5", "cannot parse"),
        ("1,,2", "cannot parse"),
        ("1,", "cannot parse"),
        ("1:2:3:4", "cannot parse"),
        ("0-5", "cannot parse"),
        ("x:5", "cannot parse"),
        ("4:4", "is empty"),  # an empty selection would freeze a run of nothing
        ("9:5", "is empty"),
    ],
)
def test_parse_errors(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_indices(text, 10)
    err = info.value
    assert isinstance(err, CuratorError)
    msg = err.format()
    assert re.search(needle, msg), msg
    assert "\n" not in msg
    assert err.message and "\n" not in err.message


def test_parse_error_messages_echo_value_and_hint() -> None:
    with pytest.raises(UsageError) as info:
        parse_indices("12", 10)
    assert "12" in info.value.message
    assert info.value.hint == "valid indices are 0..9"
    with pytest.raises(UsageError) as info:
        parse_indices("0:20", 10)
    assert "'0:20'" in info.value.message and "10" in info.value.message
    with pytest.raises(UsageError) as info:
        parse_indices("oops", 10)
    assert "'oops'" in info.value.message
    assert info.value.hint is not None and "start:stop" in info.value.hint


def test_parse_zero_step_is_an_error() -> None:
    with pytest.raises(UsageError):
        parse_indices("0:5:0", 10)


def test_parse_open_range_starting_past_the_end_is_an_error() -> None:
    with pytest.raises(UsageError):
        parse_indices("20:", 10)


def test_parse_explicit_arrays() -> None:
    assert as_list(parse_indices([4, 1, 2], 5)) == [4, 1, 2]
    assert as_list(parse_indices(np.array([0, 3]), 5)) == [0, 3]
    for bad, needle in [([5], "out of range"), ([-1], "negative|out of range"), ([1, 1], "twice")]:
        with pytest.raises(UsageError, match=needle):
            parse_indices(bad, 5)
    with pytest.raises(UsageError, match="flat"):
        check_indices(np.zeros((2, 2), dtype=np.int64), 5)


# -- to_ranges / from_ranges / format_indices ------------------------------------------------


def test_to_ranges_examples() -> None:
    assert to_ranges(np.array([], dtype=np.int64)) == []
    assert to_ranges(np.array([4])) == [[4, 5, 1]]
    assert to_ranges(np.arange(10)) == [[0, 10, 1]]
    assert to_ranges(np.arange(0, 10, 3)) == [[0, 10, 3]]
    assert to_ranges(np.array([5, 3])) == [[5, 6, 1], [3, 4, 1]]
    assert format_indices(np.array([0, 1, 2, 7, 9, 11])) == "0:3,7:12:2"
    assert format_indices([3]) == "3"


unique_indices = st.lists(st.integers(0, 300), unique=True, max_size=60).map(
    lambda xs: np.array(xs, dtype=np.int64)
)


@FAST
@given(unique_indices)
def test_ranges_round_trip(a: np.ndarray) -> None:
    ranges = to_ranges(a)
    assert all(step >= 1 for _, _, step in ranges)
    back = from_ranges(ranges)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, a)


@FAST
@given(unique_indices.filter(len))
def test_format_round_trip_without_bound(a: np.ndarray) -> None:
    # With a generous n the selection text reads back exactly (order kept).
    text = format_indices(a)
    assert "\n" not in text
    np.testing.assert_array_equal(parse_indices(text, 10_000), a)


def test_format_refuses_an_empty_selection() -> None:
    # "" would read back as "every index": refusing is the only exact answer
    with pytest.raises(UsageError, match="empty"):
        format_indices(np.empty(0, dtype=np.int64))


def test_format_round_trip_contiguous_within_source() -> None:
    # step-1 runs end at last+1 <= n, so they read back even with the tightest n
    a = np.array([0, 1, 2, 5, 6, 9], dtype=np.int64)
    assert format_indices(a) == "0:3,5:7,9"
    np.testing.assert_array_equal(parse_indices(format_indices(a), 10), a)


def test_format_round_trip_with_tight_n() -> None:
    a = np.array([0, 5], dtype=np.int64)
    np.testing.assert_array_equal(parse_indices(format_indices(a), 6), a)


# -- pending ---------------------------------------------------------------------------------


def test_pending_keeps_frozen_order() -> None:
    frozen = np.array([9, 2, 7, 4, 0], dtype=np.int64)
    assert as_list(pending(frozen, np.array([], dtype=np.int64))) == [9, 2, 7, 4, 0]
    assert as_list(pending(frozen, np.array([7, 0]))) == [9, 2, 4]
    # recorded indices outside the frozen list (or repeated) are harmless
    assert as_list(pending(frozen, np.array([100, 2, 2]))) == [9, 7, 4, 0]
    assert as_list(pending(frozen, frozen[::-1])) == []


@FAST
@given(st.lists(st.integers(0, 100), unique=True), st.lists(st.integers(0, 100)))
def test_pending_is_set_difference(frozen_l: list[int], recorded_l: list[int]) -> None:
    frozen = np.array(frozen_l, dtype=np.int64)
    recorded = np.array(recorded_l, dtype=np.int64)
    assert as_list(pending(frozen, recorded)) == [i for i in frozen_l if i not in set(recorded_l)]


# -- slice_for -------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["strided", "block"])
@pytest.mark.parametrize("size", range(1, 10))
def test_slices_cover_every_pending_index_once(schedule: str, size: int) -> None:
    rng = np.random.default_rng(size)
    for n in (0, 1, size - 1, size, size + 1, 23, 100):
        indices = rng.permutation(200)[:n].astype(np.int64)
        parts = [slice_for(indices, r, size, schedule) for r in range(size)]
        joined = np.concatenate(parts) if parts else np.empty(0, np.int64)
        assert sorted(as_list(joined)) == sorted(as_list(indices))
        assert len(joined) == len(indices)
        lengths = [len(p) for p in parts]
        if schedule == "strided":
            assert max(lengths) - min(lengths) <= 1
            for r, p in enumerate(parts):
                np.testing.assert_array_equal(p, indices[r::size])
        else:
            # contiguous blocks, in order
            np.testing.assert_array_equal(joined, indices)


def test_slice_for_errors() -> None:
    idx = np.arange(5)
    for rank, size in [(0, 0), (2, 2), (-1, 3), (5, 1)]:
        with pytest.raises(UsageError, match="not valid"):
            slice_for(idx, rank, size)
    with pytest.raises(UsageError, match="unknown static schedule") as info:
        slice_for(idx, 0, 1, "dynamic")
    assert "\n" not in info.value.format()
    assert "dynamic" in SCHEDULES


# -- default_chunk_size --------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_pending", "size", "expected"),
    [
        (0, 1, 1),
        (10, 4, 1),
        (1000, 1, 62),
        (10_000, 4, 156),
        (10**6, 1, 256),
        (10**6, 0, 256),
        (100, 0, 100),
    ],
)
def test_default_chunk_size(n_pending: int, size: int, expected: int) -> None:
    assert default_chunk_size(n_pending, size) == expected


@FAST
@given(st.integers(0, 10**7), st.integers(1, 4096))
def test_default_chunk_size_bounds(n_pending: int, size: int) -> None:
    c = default_chunk_size(n_pending, size)
    assert isinstance(c, int)
    assert 1 <= c <= 256


# -- dynamic_bounds / snap_bounds -------------------------------------------------------------


@FAST
@given(st.integers(0, 5000), st.integers(1, 64), st.integers(1, 300), st.booleans())
def test_dynamic_bounds_cover_every_position_once(n: int, size: int, c: int, taper: bool) -> None:
    b = dynamic_bounds(n, size, c, taper=taper)
    sizes = np.diff(b)
    assert b[0] == 0 and b[-1] == n and (sizes > 0).all()
    assert sizes.max(initial=0) <= c
    if not taper:  # the plain schedule: chunks of chunk_size, the last one what is left
        np.testing.assert_array_equal(b, np.unique(np.r_[np.arange(0, n, c), n]))
    elif n >= TAPER_CHUNKS_PER_RANK * size * c:  # the tail fits: it ends in single indices
        last = TAPER_CHUNKS_PER_RANK * size
        assert sizes[-last:].tolist() == [1] * last
        assert (np.diff(sizes) > 0).sum() <= 1  # shrinking, but for the head's partial chunk
        assert len(sizes) <= -(-n // c) + 1 + last * c.bit_length()


def test_tapered_chunks_end_within_an_index_of_each_other() -> None:
    # 1,000 indices on 2 ranks, default chunk 31: 28 chunks of 31, then 15, 7, 3, 1 (4 each)
    sizes = np.diff(dynamic_bounds(1000, 2, default_chunk_size(1000, 2)))
    assert sizes[:28].tolist() == [31] * 28
    assert sizes[-16:].tolist() == [15] * 4 + [7] * 4 + [3] * 4 + [1] * 4
    assert sizes.sum() == 1000


@FAST
@given(st.lists(st.integers(1, 20), min_size=1, max_size=60), st.integers(1, 8), st.integers(1, 40))
def test_snapped_chunks_hold_whole_units(units: list[int], size: int, chunk: int) -> None:
    bounds = np.concatenate([[0], np.cumsum(units)]).astype(np.int64)
    starts = dynamic_bounds(int(bounds[-1]), size, chunk, units=bounds)
    assert starts[0] == 0 and starts[-1] == bounds[-1] and (np.diff(starts) > 0).all()
    assert set(starts.tolist()) <= set(bounds.tolist())


@pytest.mark.parametrize("schedule", ["strided", "block"])
@pytest.mark.parametrize("size", [1, 3])
def test_a_rank_runs_its_whole_share_across_conversion_blocks(schedule: str, size: int) -> None:
    """``rank.my_indices`` turns its share into Python ints 65,536 at a time (not all at
    once: 10^8 indices on few ranks would be GBs): every index once, in order."""
    from hpc_curator.engine.rank import my_indices
    from hpc_curator.engine.signals import StopFlag
    from hpc_curator.engine.values import Plan, RunSettings
    from hpc_curator.runtime.world import World

    pending = np.sort(np.random.default_rng(3).choice(10**6, 200_003, replace=False))
    settings = RunSettings(schedule=schedule)
    plan = Plan("/nowhere", 1, {}, "/", pending, 10**6, 0, 0, settings)
    shares = [
        list(my_indices(plan, World(rank=r, size=size), None, StopFlag())) for r in range(size)
    ]
    for r, got in enumerate(shares):
        assert got == slice_for(pending, r, size, schedule).tolist()
    assert sorted(i for got in shares for i in got) == pending.tolist()
    assert all(type(i) is int for i in shares[0][:3])
