"""Tests of the built-in components on real files (HDF5, Parquet) and of FieldStats' algebra."""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpc_curator.components import (
    FailOn,
    FieldStats,
    HDF5Sink,
    HDF5Source,
    Moments,
    ParquetSink,
    Sleep,
    Smooth,
    SyntheticSource,
    read_fieldstats,
)
from hpc_curator.components.synthetic import parse_shape
from hpc_curator.errors import CuratorError, ShardError
from hpc_curator.model.pipeline import Pipeline
from hpc_curator.store.atomic import TMP_PREFIX


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(f"{TMP_PREFIX}*"))


def first(items: Iterator[Any]) -> Any:
    return next(iter(items))


# -- SyntheticSource ------------------------------------------------------------------------


def test_synthetic_is_deterministic_whatever_the_access_order() -> None:
    kwargs = {"n": 12, "shape": "5x3", "seed": 42, "fields": "u,v", "items": 2}
    forward = SyntheticSource(**kwargs)
    backward = SyntheticSource(**kwargs)
    ref = {i: list(forward[i]) for i in range(12)}
    order = np.random.default_rng(0).permutation(12)
    got = {int(i): list(backward[int(i)]) for i in order}
    got_again = list(backward[7])  # re-reading an index gives the same data
    lone = list(SyntheticSource(**kwargs)[9])  # a fresh instance that only sees index 9
    for i in range(12):
        for a, b in zip(ref[i], got[i], strict=True):
            assert a["index"] == b["index"] == i
            for f in ("u", "v"):
                assert a[f].dtype == np.float32 and a[f].shape == (5, 3)
                np.testing.assert_array_equal(a[f], b[f])
    for a, b in zip(ref[7], got_again, strict=True):
        np.testing.assert_array_equal(a["u"], b["u"])
    for a, b in zip(ref[9], lone, strict=True):
        np.testing.assert_array_equal(a["v"], b["v"])


def test_synthetic_items_fields_and_seeds_differ() -> None:
    s0 = SyntheticSource(n=3, shape=(8,), seed=0, fields=("a", "b"), items=3)
    s1 = SyntheticSource(n=3, shape=(8,), seed=1, fields=("a", "b"), items=3)
    items = list(s0[1])
    assert [(d["index"], d["item"]) for d in items] == [(1, 0), (1, 1), (1, 2)]
    assert sorted(items[0]) == ["a", "b", "index", "item"]
    assert not np.array_equal(items[0]["a"], items[0]["b"])
    assert not np.array_equal(items[0]["a"], items[1]["a"])
    assert not np.array_equal(first(s0[0])["a"], first(s0[1])["a"])
    for i in range(3):
        assert not np.array_equal(first(s0[i])["a"], first(s1[i])["a"])


def test_synthetic_shape_and_length() -> None:
    assert len(SyntheticSource(n=0)) == 0
    assert len(SyntheticSource(n="7")) == 7  # type: ignore[arg-type]
    assert first(SyntheticSource(n=1)[0])["u"].shape == (16, 16)
    assert first(SyntheticSource(n=1, shape="4X3x2")[0])["u"].shape == (4, 3, 2)
    assert first(SyntheticSource(n=1, shape=[2, 5])[0])["u"].shape == (2, 5)
    assert parse_shape("64x64x16") == (64, 64, 16)


@pytest.mark.parametrize("shape", ["", "0x4", "4x-1", "axb", "4x", (), (3, 0), "1.5x2"])
def test_synthetic_bad_shape(shape: Any) -> None:
    with pytest.raises(ValueError):
        SyntheticSource(n=2, shape=shape)


def test_synthetic_bad_n_and_index() -> None:
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        SyntheticSource(n=-1)
    with pytest.raises(ValueError):
        SyntheticSource(n="many")  # type: ignore[arg-type]
    src = SyntheticSource(n=3)
    for bad in (3, -1, 100):
        with pytest.raises(IndexError, match="out of range"):
            list(src[bad])


# -- HDF5 sink and source -------------------------------------------------------------------


def test_hdf5_round_trip_one_item_per_index(tmp_path: Path) -> None:
    out = tmp_path / "out"
    src = SyntheticSource(n=3, shape=(4, 6), seed=5, fields=("u", "v"))
    sink = HDF5Sink(str(out))
    p = Pipeline(src).write(sink)
    paths = [p.run_index(i) for i in (2, 0, 1)]
    assert paths == [[str(out / f"{i:08d}.h5")] for i in (2, 0, 1)]
    assert leftovers(tmp_path) == []

    with h5py.File(out / "00000002.h5", "r") as fh:
        assert sorted(fh.keys()) == ["u", "v"]  # datasets at the root
        assert isinstance(fh["u"], h5py.Dataset)
        assert fh["u"].dtype == np.float32
        assert fh.attrs["index"] == 2 and fh.attrs["item"] == 0  # scalars as attributes
        np.testing.assert_array_equal(fh["u"][()], first(src[2])["u"])

    back = HDF5Source(str(out / "*.h5"))
    assert len(back) == 3
    assert back.files == tuple(str(out / f"{i:08d}.h5") for i in range(3))
    for i in range(3):
        (item,) = list(back[i])
        orig = first(src[i])
        assert item["index"] == i and item["path"] == str(out / f"{i:08d}.h5")
        assert sorted(item) == ["index", "path", "u", "v"]
        for f in ("u", "v"):
            np.testing.assert_array_equal(item[f], orig[f])


def test_hdf5_round_trip_several_items_per_index(tmp_path: Path) -> None:
    src = SyntheticSource(n=2, shape=(3,), seed=9, items=3)
    (path,) = HDF5Sink(str(tmp_path), name="x{index}.h5")(src[1], 1)
    assert path == str(tmp_path / "x1.h5")
    with h5py.File(path, "r") as fh:
        assert sorted(fh.keys()) == ["item_00000", "item_00001", "item_00002"]
        for k, orig in enumerate(src[1]):
            g = fh[f"item_{k:05d}"]
            assert isinstance(g, h5py.Group)
            assert g.attrs["index"] == 1 and g.attrs["item"] == k
            np.testing.assert_array_equal(g["u"][()], orig["u"])

    (item,) = list(HDF5Source(str(tmp_path / "**" / "x*.h5"))[0])
    assert sorted(item) == ["index", "item_00000/u", "item_00001/u", "item_00002/u", "path"]


def test_hdf5_sink_scalars_strings_and_non_dict_items(tmp_path: Path) -> None:
    sink = HDF5Sink(str(tmp_path / "o"), compression="gzip")
    item = {
        "arr": np.arange(6, dtype=np.int32).reshape(2, 3),
        "f": 1.5,
        "i": 7,
        "s": "hello",
        "np_scalar": np.float64(2.25),
        "zero_d": np.array(3.0),
        "skipped": None,
    }
    (path,) = sink(iter([item]), 4)
    with h5py.File(path, "r") as fh:
        assert list(fh.keys()) == ["arr"]
        assert fh["arr"].compression == "gzip"
        np.testing.assert_array_equal(fh["arr"][()], item["arr"])
        assert dict(fh.attrs) == {"f": 1.5, "i": 7, "s": "hello", "np_scalar": 2.25, "zero_d": 3.0}

    (path,) = HDF5Sink(str(tmp_path / "p"), compression="none")(iter([np.arange(4)]), 0)
    with h5py.File(path, "r") as fh:
        assert fh["value"].compression is None
        np.testing.assert_array_equal(fh["value"][()], np.arange(4))

    (path,) = HDF5Sink(str(tmp_path / "q"))(iter([]), 0)  # no items: an empty file
    with h5py.File(path, "r") as fh:
        assert len(fh) == 0


def test_hdf5_sink_and_source_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        HDF5Sink(str(tmp_path), name="{idx}.h5")
    with pytest.raises(ValueError, match="no file matches"):
        HDF5Source(str(tmp_path / "*.h5"))


@pytest.mark.parametrize("several", [False, True])
def test_hdf5_sink_is_atomic_on_failure(tmp_path: Path, several: bool) -> None:
    sink = HDF5Sink(str(tmp_path))
    final = tmp_path / "00000003.h5"
    bad = {"u": np.ones(3), "bad": {"nested": "dict"}}  # h5py cannot store a dict attribute
    items = [{"u": np.zeros(2)}, bad] if several else [bad]
    with pytest.raises(TypeError):
        sink(iter(items), 3)
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []

    # an existing output survives a failed rewrite untouched
    sink(iter([{"u": np.arange(3.0)}]), 3)
    before = final.read_bytes()
    with pytest.raises(TypeError):
        sink(iter(items), 3)
    assert final.read_bytes() == before
    assert leftovers(tmp_path) == []


# -- ParquetSink ----------------------------------------------------------------------------


def test_parquet_rows_round_trip(tmp_path: Path) -> None:
    items = [
        {"index": 1, "score": 0.5, "label": "a", "vec": np.array([1.0, 2.0])},
        {"index": 1, "score": 1.5, "label": "b", "vec": np.array([3.0])},
        {"index": 1, "score": np.float32(2.5), "label": "c", "vec": np.array([])},
    ]
    (path,) = ParquetSink(str(tmp_path / "t"))(iter(items), 1)
    assert path == str(tmp_path / "t" / "00000001.parquet")
    assert pq.read_table(path).to_pylist() == [
        {"index": 1, "score": 0.5, "label": "a", "vec": [1.0, 2.0]},
        {"index": 1, "score": 1.5, "label": "b", "vec": [3.0]},
        {"index": 1, "score": 2.5, "label": "c", "vec": []},
    ]
    assert leftovers(tmp_path) == []

    (path,) = ParquetSink(str(tmp_path), name="v{index}.pq")(iter([3, 4]), 9)
    assert path == str(tmp_path / "v9.pq")
    assert pq.read_table(path).to_pylist() == [{"value": 3}, {"value": 4}]


def test_parquet_sink_in_a_pipeline(tmp_path: Path) -> None:
    p = Pipeline(SyntheticSource(n=4, shape=(2, 2), items=3)).write(ParquetSink(str(tmp_path)))
    (path,) = p.run_index(2)
    rows = pq.read_table(path).to_pylist()
    assert [(r["index"], r["item"]) for r in rows] == [(2, 0), (2, 1), (2, 2)]
    for r, orig in zip(rows, SyntheticSource(n=4, shape=(2, 2), items=3)[2], strict=True):
        assert r["u"] == orig["u"].tolist()


@pytest.mark.parametrize(
    "items",
    [
        [{"s": {}}],  # fails inside pq.write_table: an empty struct has no Parquet type
        [{"a": 1}, {"a": "x"}],  # fails building the table
    ],
)
def test_parquet_sink_is_atomic_on_failure(tmp_path: Path, items: list[Any]) -> None:
    sink = ParquetSink(str(tmp_path))
    final = tmp_path / "00000000.parquet"
    with pytest.raises(Exception):  # noqa: B017 - any pyarrow error
        sink(iter(items), 0)
    assert not final.exists()
    assert leftovers(tmp_path) == []

    sink(iter([{"a": 1}]), 0)
    with pytest.raises(Exception):  # noqa: B017
        sink(iter(items), 0)
    assert pq.read_table(final).to_pylist() == [{"a": 1}]
    assert leftovers(tmp_path) == []


# -- FieldStats -----------------------------------------------------------------------------


def assert_close(got: float, want: float, rel: float = 1e-12) -> None:
    assert abs(got - want) <= rel * abs(want), (got, want)


def test_fieldstats_matches_numpy_over_several_indices(tmp_path: Path) -> None:
    src = SyntheticSource(n=6, shape=(7, 9), seed=3, fields=("u", "v"), items=2)
    stats = FieldStats(name="fs")
    p = Pipeline(src).filter(Smooth("v")).filter(stats)
    chosen = [0, 2, 3, 5]
    for i in chosen:
        p.run_index(i)
    out = tmp_path / "fs.h5"
    stats.flush(str(out))
    got = read_fieldstats(str(out))
    assert sorted(got) == ["u", "v"]
    for field in ("u", "v"):
        ref = np.concatenate([item[field].ravel() for i in chosen for item in p[i]])
        ref = ref.astype(np.float64)
        g = got[field]
        assert g["count"] == ref.size == 4 * 2 * 63
        assert g["min"] == ref.min() and g["max"] == ref.max()
        assert_close(g["mean"], float(ref.mean()))
        assert_close(g["variance"], float(ref.var()))
        assert_close(g["std"], float(ref.std()))
    with h5py.File(out, "r") as fh:
        assert fh.attrs["format"] == "hpc-curator.fieldstats/2"
        assert sorted(fh["stats"]["field"].astype(str)) == sorted(got)


def test_fieldstats_field_selection_and_non_numeric() -> None:
    item = {
        "a": np.array([1, 2, 3], dtype=np.int16),
        "b": np.array([0.5]),
        "flags": np.array([True, False]),
        "text": np.array(["x", "y"]),
        "empty": np.array([], dtype=np.float64),
        "scalar": 3.0,
        "index": 0,
    }
    default = FieldStats()
    state = default.empty_state()
    assert default.observe(state, item) is item
    assert sorted(state) == ["a", "b"]
    assert state["a"] == Moments(3, 2.0, 2.0, 1.0, 3.0)

    only_b = FieldStats(fields="b,")
    assert only_b.fields == ("b",)
    state = only_b.empty_state()
    only_b.observe(state, item)
    assert sorted(state) == ["b"]
    assert FieldStats(fields=["a", "b"]).fields == ("a", "b")
    assert FieldStats().fields is None and FieldStats().name == "fieldstats"


def test_moments_basics() -> None:
    empty = Moments()
    assert empty.count == 0 and np.isnan(empty.variance)
    assert Moments.of(np.array([])) == empty
    m = Moments.of(np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert m == Moments(4, 2.5, 5.0, 1.0, 4.0) and m.variance == 1.25
    assert m.combine(empty) == m and empty.combine(m) == m
    assert m.combine(empty) is not m


def test_fieldstats_empty_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "e.h5"
    FieldStats.write_state({}, str(path))
    assert FieldStats.read_state(str(path)) == {}
    FieldStats.merge([], str(tmp_path / "m.h5"))
    assert read_fieldstats(str(tmp_path / "m.h5")) == {}


arrays = st.lists(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=12
).map(lambda xs: np.array(xs, dtype=np.float64))


def fold_tree(states: list[Any]) -> Any:
    if not states:
        return FieldStats.empty_state()
    while len(states) > 1:
        nxt = [FieldStats.combine(a, b) for a, b in zip(states[::2], states[1::2], strict=False)]
        if len(states) % 2:
            nxt.append(states[-1])
        states = nxt
    return states[0]


@settings(max_examples=30, deadline=None, database=None)
@given(
    items=st.lists(st.tuples(arrays, arrays), min_size=1, max_size=12),
    data=st.data(),
)
def test_fieldstats_merge_is_associative_and_commutative(
    items: list[tuple[np.ndarray, np.ndarray]], data: st.DataObject
) -> None:
    n_shards = data.draw(st.integers(1, len(items)), label="n_shards")
    owner = data.draw(
        st.lists(st.integers(0, n_shards - 1), min_size=len(items), max_size=len(items)),
        label="owner",
    )
    shards = []
    for s in range(n_shards):
        f = FieldStats()
        f.begin()
        for k, (x, y) in enumerate(items):
            if owner[k] == s:
                list(f(iter([{"x": x, "y": y}])))
        f.accept()
        shards.append(f._state)

    perms = [data.draw(st.permutations(range(n_shards)), label=f"perm{j}") for j in range(3)]
    left = functools.reduce(FieldStats.combine, [shards[j] for j in perms[0]], {})
    right = functools.reduce(
        lambda acc, s: FieldStats.combine(s, acc), [shards[j] for j in perms[1]], {}
    )
    tree = fold_tree([shards[j] for j in perms[2]])

    with tempfile.TemporaryDirectory() as d:
        paths = []
        for j in perms[0]:
            path = f"{d}/shard{j:03d}.h5"
            FieldStats.write_state(shards[j], path)
            assert FieldStats.read_state(path) == shards[j]  # exact float64 round trip
            paths.append(path)
        FieldStats.merge(paths, f"{d}/merged.h5")
        merged = FieldStats.read_state(f"{d}/merged.h5")

    results = [left, right, tree, merged]
    for field, col in (("x", 0), ("y", 1)):
        ref = np.concatenate([it[col] for it in items])
        scale = float(np.abs(ref).max())
        for r in results:
            m = r[field]
            assert m.count == results[0][field].count == ref.size
            assert m.min == results[0][field].min == ref.min()
            assert m.max == results[0][field].max == ref.max()
            # relative to the data's magnitude (a mean close to 0 has no useful relative error)
            assert abs(m.mean - ref.mean()) <= 1e-12 * max(abs(ref.mean()), scale)
            assert abs(m.variance - ref.var()) <= 1e-12 * max(ref.var(), scale * scale)


def test_read_state_errors_name_the_path(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not hdf5 at all\n" * 10)

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as fh:
        fh.create_dataset("x", data=np.arange(3))

    broken = tmp_path / "broken.h5"
    with h5py.File(broken, "w") as fh:
        fh.attrs["format"] = "hpc-curator.fieldstats/2"
        fh.create_dataset("stats", data=np.arange(3.0))  # not the row layout

    truncated = tmp_path / "truncated.h5"
    FieldStats.write_state({"u": Moments(3, 1.0, 2.0, 0.0, 2.0)}, str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:200])

    missing = tmp_path / "missing.h5"

    for path in (garbage, foreign, broken, truncated, missing):
        with pytest.raises(ShardError) as info:
            FieldStats.read_state(str(path))
        err = info.value
        assert isinstance(err, CuratorError) and err.exit_code == 4
        assert str(path) in err.message
        assert "\n" not in err.format()
        with pytest.raises(ShardError):
            read_fieldstats(str(path))
    with pytest.raises(ShardError):
        FieldStats.merge([str(garbage)], str(tmp_path / "out.h5"))
    assert not (tmp_path / "out.h5").exists()


def test_fieldstats_over_hdf5_source_with_several_items(tmp_path: Path) -> None:
    src = SyntheticSource(n=2, shape=(3,), items=2)
    Pipeline(src).write(HDF5Sink(str(tmp_path / "in"))).run_index(0)
    stats = FieldStats()
    Pipeline(HDF5Source(str(tmp_path / "in" / "*.h5"))).filter(stats).run_index(0)
    stats.flush(str(tmp_path / "s.h5"))
    state = FieldStats.read_state(str(tmp_path / "s.h5"))
    assert sorted(state) == ["item_00000/u", "item_00001/u"]


# -- transforms -----------------------------------------------------------------------------


def test_smooth_matches_manual_three_point_average() -> None:
    x = np.zeros(7, dtype=np.float32)
    x[3] = 3.0
    (out,) = list(Smooth("u", passes=1)(iter([{"u": x, "k": "keep"}])))
    np.testing.assert_allclose(out["u"], [0, 0, 1, 1, 1, 0, 0], rtol=1e-6)
    assert out["k"] == "keep"
    assert x[3] == 3.0 and x.sum() == 3.0  # input not modified

    rng = np.random.default_rng(1)
    a = rng.standard_normal((5, 4, 3)).astype(np.float32)
    ref = a.copy()
    for _ in range(3):
        for axis in range(3):
            ref = (np.roll(ref, 1, axis) + ref + np.roll(ref, -1, axis)) / np.float32(3)
    (got,) = list(Smooth(field="w", passes=3)(iter([{"w": a}])))
    assert got["w"].dtype == np.float32
    np.testing.assert_allclose(got["w"], ref, rtol=1e-6, atol=1e-6)
    assert abs(float(got["w"].sum()) - float(a.sum())) < 1e-3  # periodic: sum preserved
    assert float(got["w"].std()) < float(a.std())

    (same,) = list(Smooth(passes=0)(iter([{"u": np.arange(4)}])))
    np.testing.assert_array_equal(same["u"], np.arange(4, dtype=np.float32))
    assert Smooth(passes="2").passes == 2  # type: ignore[arg-type]


def test_fail_on_raises_only_for_chosen_indices() -> None:
    f = FailOn("1, 3", error="boom")
    assert f.indices == frozenset({1, 3})
    assert FailOn([2]).indices == frozenset({2}) and FailOn().indices == frozenset()
    ok = [{"index": 0}, {"index": 2}]
    assert list(f(iter(ok))) == ok

    gen = f(iter([{"index": 0}, {"index": 3}]))  # lazy: nothing raised yet
    assert next(gen) == {"index": 0}
    with pytest.raises(RuntimeError, match=r"^boom at index 3$"):
        next(gen)

    p = Pipeline(SyntheticSource(n=4, shape=(2,))).filter(FailOn("2"))
    assert p.run_index(1) == []
    with pytest.raises(RuntimeError, match="injected failure at index 2"):
        p.run_index(2)


def test_sleep_delays_each_item_lazily() -> None:
    # how fast the call returns is measured by the benchmarks (P7), not asserted here
    s = Sleep(0.02)
    assert s.seconds == 0.02 and Sleep("0.5").seconds == 0.5  # type: ignore[arg-type]
    pulled: list[int] = []

    def source() -> Iterator[int]:
        for i in (1, 2, 3):
            pulled.append(i)
            yield i

    t0 = time.perf_counter()
    gen = s(source())
    assert pulled == []  # lazy: nothing pulled (nor slept) before the first item is asked for
    assert list(gen) == [1, 2, 3]
    assert time.perf_counter() - t0 >= 0.06
