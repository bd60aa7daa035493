"""Tests of the pipeline model: builder, laziness, run_index and transactional state."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from hpc_curator.components import FieldStats, HDF5Sink, Smooth, SyntheticSource
from hpc_curator.errors import SpecError
from hpc_curator.model.pipeline import (
    Component,
    Filter,
    Param,
    Pipeline,
    Sink,
    Source,
    StatefulFilter,
    check_unique_names,
)
from hpc_curator.model.spec import build

# -- small real components ------------------------------------------------------------------


class CountingSource(Source):
    """Index ``i`` yields ``per`` dicts ``{"index": i, "k": k, "x": 10*i + k}``."""

    params = (Param("n", int, Param.REQUIRED), Param("per", int, 2))

    def __init__(self, n: int, per: int = 2) -> None:
        self.n = int(n)
        self.per = int(per)
        self.started: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Iterator[dict[str, Any]]:
        self.started.append(index)
        for k in range(self.per):
            yield {"index": index, "k": k, "x": 10 * index + k}


class DropOdd(Filter):
    """Drop items whose ``x`` is odd."""

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        return (item for item in items if item["x"] % 2 == 0)


class Explode(Filter):
    """Replace each item by ``times`` copies tagged with ``copy``."""

    def __init__(self, times: int = 2) -> None:
        self.times = int(times)

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            for c in range(self.times):
                yield {**item, "copy": c}


class RaiseAt(Filter):
    """Raise ``ValueError`` when an item of index ``index`` passes (lazily)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            if item["index"] == self.index:
                raise ValueError(f"bad item at {self.index}")
            yield item


class Tally(StatefulFilter[dict[str, Any]]):
    """Count items and collect their ``x`` values (a simple exact state)."""

    suffix = ".json"

    @classmethod
    def empty_state(cls) -> dict[str, Any]:
        return {"count": 0, "xs": []}

    def observe(self, state: dict[str, Any], item: Any) -> Any:
        state["count"] += 1
        state["xs"].append(item["x"])
        return item

    @classmethod
    def combine(cls, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        return {"count": a["count"] + b["count"], "xs": sorted(a["xs"] + b["xs"])}

    @classmethod
    def write_state(cls, state: dict[str, Any], path: str) -> None:
        Path(path).write_text(json.dumps(state))

    @classmethod
    def read_state(cls, path: str) -> dict[str, Any]:
        return json.loads(Path(path).read_text())


class ListSink(Sink):
    """Collect items in memory and write one JSON file per index; may fail after ``fail_after``."""

    def __init__(self, out_dir: str, fail_after: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.fail_after = fail_after
        self.calls: list[int] = []

    def __call__(self, items: Iterator[Any], index: int) -> list[str]:
        self.calls.append(index)
        got = []
        for item in items:
            if self.fail_after is not None and len(got) >= self.fail_after:
                raise OSError(f"disk full at index {index}")
            got.append(item)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{index}.json"
        path.write_text(json.dumps(got))
        return [path, self.out_dir / f"{index}.meta"]  # Path objects on purpose


def state_of(f: Tally, tmp_path: Path, name: str = "flush.json") -> dict[str, Any]:
    path = tmp_path / name
    f.flush(str(path))
    return Tally.read_state(str(path))


# -- builder --------------------------------------------------------------------------------


def test_builder_is_immutable() -> None:
    src = CountingSource(3)
    base = Pipeline(src)
    f1, f2 = DropOdd(), Explode()
    p1 = base.filter(f1)
    p2 = p1.filter(f2)
    sink = ListSink("unused")
    p3 = p2.write(sink)

    assert base.filters == () and base.sink is None
    assert p1.filters == (f1,) and p1.sink is None
    assert p2.filters == (f1, f2) and p2.sink is None
    assert p3.filters == (f1, f2) and p3.sink is sink
    assert p3.source is src and len(p3) == 3
    assert p1 is not base and p2 is not p1 and p3 is not p2

    with pytest.raises(dataclasses.FrozenInstanceError):
        p3.sink = None  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p3.filters = ()  # type: ignore[misc]

    # branching from the same base does not affect siblings
    other = p1.filter(RaiseAt(0))
    assert p2.filters == (f1, f2) and len(other.filters) == 2


def test_write_replaces_sink_and_stateful_filters_are_ordered() -> None:
    a, b = Tally(name="a"), Tally(name="b")
    s1, s2 = ListSink("x"), ListSink("y")
    p = Pipeline(CountingSource(1)).filter(a).filter(DropOdd()).filter(b).write(s1).write(s2)
    assert p.sink is s2
    assert p.stateful_filters == (a, b)


def test_with_spec_is_remembered_but_dropped_by_further_building() -> None:
    p = Pipeline(CountingSource(2))
    spec = {"kind": "factory", "ref": "x.py:build", "params": {}}
    q = p.with_spec(spec)
    assert q.to_spec() is spec
    assert p.spec is None
    assert q == p  # spec is not part of equality
    assert q.filter(DropOdd()).spec is None
    assert q.filter(DropOdd()).to_spec()["kind"] == "components"


# -- laziness -------------------------------------------------------------------------------


def test_getitem_is_lazy_and_applies_filters_in_order(tmp_path: Path) -> None:
    src = CountingSource(5, per=4)
    sink = ListSink(str(tmp_path))
    p = Pipeline(src).filter(DropOdd()).filter(Explode(2)).write(sink)

    items = p[3]
    assert src.started == []  # nothing pulled yet
    assert sink.calls == []
    out = list(items)
    assert src.started == [3]
    assert sink.calls == []  # __getitem__ never drives the sink
    assert list(tmp_path.iterdir()) == []
    assert [(d["x"], d["copy"]) for d in out] == [(30, 0), (30, 1), (32, 0), (32, 1)]


def test_getitem_does_not_raise_until_iterated() -> None:
    p = Pipeline(CountingSource(3)).filter(RaiseAt(1))
    it = p[1]  # building the iterator is fine
    with pytest.raises(ValueError, match="bad item at 1"):
        next(iter(it))
    assert list(p[2]) == [{"index": 2, "k": 0, "x": 20}, {"index": 2, "k": 1, "x": 21}]


def test_getitem_does_not_accept_stateful_state(tmp_path: Path) -> None:
    t = Tally()
    p = Pipeline(CountingSource(3)).filter(t)
    assert len(list(p[0])) == 2
    assert not t.has_delta
    assert state_of(t, tmp_path) == {"count": 0, "xs": []}


# -- run_index ------------------------------------------------------------------------------


def test_run_index_returns_sink_paths_as_strings(tmp_path: Path) -> None:
    sink = ListSink(str(tmp_path / "out"))
    p = Pipeline(CountingSource(4)).filter(DropOdd()).write(sink)
    paths = p.run_index(2)
    assert paths == [str(tmp_path / "out" / "2.json"), str(tmp_path / "out" / "2.meta")]
    assert all(isinstance(x, str) for x in paths)
    assert json.loads(Path(paths[0]).read_text()) == [{"index": 2, "k": 0, "x": 20}]
    assert sink.calls == [2]


def test_run_index_without_sink_drains_and_accepts(tmp_path: Path) -> None:
    src = CountingSource(3, per=3)
    t = Tally()
    p = Pipeline(src).filter(t)
    assert p.run_index(1) == []
    assert src.started == [1]
    assert t.has_delta
    assert state_of(t, tmp_path) == {"count": 3, "xs": [10, 11, 12]}


# -- transactional stateful filters ---------------------------------------------------------


def test_accept_discard_flush_cycle(tmp_path: Path) -> None:
    t = Tally(name="t")
    assert t.name == "t" and not t.has_delta
    p = Pipeline(CountingSource(10)).filter(t).write(ListSink(str(tmp_path / "out")))

    p.run_index(0)
    p.run_index(4)
    assert t.has_delta
    assert state_of(t, tmp_path, "d1.json") == {"count": 4, "xs": [0, 1, 40, 41]}
    assert not t.has_delta  # flush resets the delta
    assert state_of(t, tmp_path, "d2.json") == {"count": 0, "xs": []}

    p.run_index(7)
    assert t.has_delta
    assert state_of(t, tmp_path, "d3.json") == {"count": 2, "xs": [70, 71]}

    # deltas merge in any subset and order
    out = tmp_path / "merged.json"
    Tally.merge([str(tmp_path / n) for n in ("d3.json", "d1.json", "d2.json")], str(out))
    assert Tally.read_state(str(out)) == {"count": 6, "xs": [0, 1, 40, 41, 70, 71]}
    Tally.merge([], str(out))
    assert Tally.read_state(str(out)) == {"count": 0, "xs": []}


def test_failing_sink_discards_the_index_delta(tmp_path: Path) -> None:
    t = Tally()
    good = Pipeline(CountingSource(10, per=3)).filter(t).write(ListSink(str(tmp_path / "g")))
    bad = good.write(ListSink(str(tmp_path / "b"), fail_after=2))

    with pytest.raises(OSError, match="disk full at index 5"):
        bad.run_index(5)  # the filter observed 3 items before the sink failed
    assert not t.has_delta
    assert not (tmp_path / "b").exists()

    good.run_index(1)
    with pytest.raises(OSError):
        bad.run_index(2)
    assert t.has_delta  # index 1 is still accepted
    assert state_of(t, tmp_path) == {"count": 3, "xs": [10, 11, 12]}


def test_failed_index_delta_is_dropped_immediately(tmp_path: Path) -> None:
    # not only at the next begin(): an accept() right after the failure folds in nothing
    t = Tally()
    bad = Pipeline(CountingSource(3, per=4)).filter(t).write(ListSink(str(tmp_path), 1))
    with pytest.raises(OSError):
        bad.run_index(2)
    t.accept()
    assert state_of(t, tmp_path) == {"count": 0, "xs": []}


def test_failing_downstream_filter_discards_and_retry_counts_once(tmp_path: Path) -> None:
    t = Tally()
    failing = Pipeline(CountingSource(5)).filter(t).filter(RaiseAt(3))
    fixed = Pipeline(failing.source).filter(t)

    failing.run_index(2)
    with pytest.raises(ValueError, match="bad item at 3"):
        failing.run_index(3)
    fixed.run_index(3)  # the retry succeeds
    assert state_of(t, tmp_path) == {"count": 4, "xs": [20, 21, 30, 31]}


def test_failing_upstream_filter_leaves_state_untouched(tmp_path: Path) -> None:
    t = Tally()
    p = Pipeline(CountingSource(5)).filter(RaiseAt(0)).filter(t)
    with pytest.raises(ValueError):
        p.run_index(0)
    assert not t.has_delta
    assert state_of(t, tmp_path) == {"count": 0, "xs": []}


def test_base_exception_also_discards(tmp_path: Path) -> None:
    class Interrupting(Sink):
        def __call__(self, items: Iterator[Any], index: int) -> list[str]:
            next(iter(items))
            raise KeyboardInterrupt

    t = Tally()
    p = Pipeline(CountingSource(2)).filter(t).write(Interrupting())
    with pytest.raises(KeyboardInterrupt):
        p.run_index(0)
    assert not t.has_delta
    assert state_of(t, tmp_path) == {"count": 0, "xs": []}


def test_begin_forgets_unaccepted_observations(tmp_path: Path) -> None:
    t = Tally()
    p = Pipeline(CountingSource(3)).filter(t)
    list(p[0])  # observed but never accepted (e.g. a crashed attempt)
    p.run_index(1)
    assert state_of(t, tmp_path) == {"count": 2, "xs": [10, 11]}


def test_manual_protocol_discard_and_accept(tmp_path: Path) -> None:
    t = Tally()
    t.begin()
    list(t(iter([{"x": 1}, {"x": 2}])))
    t.discard()
    assert not t.has_delta
    t.begin()
    assert list(t(iter([{"x": 5}]))) == [{"x": 5}]  # items pass through unchanged
    t.accept()
    assert t.has_delta
    t.accept()  # accepting an empty delta keeps the state
    assert state_of(t, tmp_path) == {"count": 1, "xs": [5]}


def test_fieldstats_in_pipeline_is_transactional(tmp_path: Path) -> None:
    stats = FieldStats(fields="u", name="st")
    src = SyntheticSource(n=6, shape=(4, 5), seed=1)
    ok = Pipeline(src).filter(stats).write(HDF5Sink(str(tmp_path / "out")))
    bad = ok.write(ListSink(str(tmp_path / "bad"), fail_after=0))
    for i in (0, 2):
        ok.run_index(i)
    with pytest.raises(OSError):
        bad.run_index(3)
    path = tmp_path / "st.h5"
    stats.flush(str(path))
    state = FieldStats.read_state(str(path))
    expected = np.concatenate([next(iter(src[i]))["u"].ravel() for i in (0, 2)]).astype(np.float64)
    assert state["u"].count == expected.size
    assert state["u"].min == expected.min() and state["u"].max == expected.max()
    assert state["u"].mean == pytest.approx(expected.mean(), rel=1e-12)


# -- init_args and specs --------------------------------------------------------------------


def test_init_args_capture_only_given_arguments() -> None:
    s = CountingSource(4)
    assert s.init_args == {"n": 4}
    s = CountingSource(4, per=3)
    assert s.init_args == {"n": 4, "per": 3}
    assert Explode().init_args == {}
    assert Explode(times=5).init_args == {"times": 5}
    t = Tally(name="x")
    assert t.init_args == {"name": "x"}
    assert t.describe() == {"class": f"{__name__}:Tally", "params": {"name": "x"}}
    src = SyntheticSource(8, "4x4", seed=3)
    assert src.init_args == {"n": 8, "shape": "4x4", "seed": 3}
    assert src.describe() == {
        "class": "hpc_curator.components.synthetic:SyntheticSource",
        "params": {"n": 8, "shape": "4x4", "seed": 3},
    }
    fs = FieldStats("u,v", name="s")
    assert fs.init_args == {"fields": "u,v", "name": "s"}


def test_describe_params_are_a_copy() -> None:
    s = CountingSource(4)
    s.describe()["params"]["n"] = 99
    assert s.init_args == {"n": 4}


def test_bad_constructor_arguments_still_raise() -> None:
    with pytest.raises(TypeError):
        CountingSource(1, 2, 3)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        SyntheticSource(-1)


def test_param_convert() -> None:
    assert Param("n", int).convert("12") == 12
    assert Param("x", float).convert("0.5") == 0.5
    assert Param("s").convert("abc") == "abc"
    assert Param("n", int).convert(7) == 7  # non-strings pass through
    for raw, value in [("true", True), ("Yes", True), ("1", True), ("off", False), ("0", False)]:
        assert Param("b", bool).convert(raw) is value
    with pytest.raises(ValueError):
        Param("n", int).convert("twelve")


def test_to_spec_round_trip_builtin_components(tmp_path: Path) -> None:
    out = tmp_path / "fields"
    p = (
        Pipeline(SyntheticSource(n=5, shape=(6, 4), seed=7, fields=("u", "v")))
        .filter(Smooth("u", passes=2))
        .filter(FieldStats(name="stats"))
        .write(HDF5Sink(str(out), name="f{index:03d}.h5"))
    )
    spec = p.to_spec()
    assert spec["kind"] == "components"
    assert spec["source"]["class"] == "hpc_curator.components.synthetic:SyntheticSource"
    frozen = json.loads(json.dumps(spec))  # the spec must survive JSON (run.json)

    rebuilt = build(frozen)
    assert rebuilt.to_spec() == frozen
    assert len(rebuilt) == 5
    assert [type(f).__name__ for f in rebuilt.filters] == ["Smooth", "FieldStats"]
    assert rebuilt.stateful_filters[0].name == "stats"

    (a,) = p.run_index(3)
    with h5py.File(a, "r") as fh:
        data_a = {k: v[()] for k, v in fh.items()}
    Path(a).unlink()
    (b,) = rebuilt.run_index(3)
    assert a == b == str(out / "f003.h5")
    with h5py.File(b, "r") as fh:
        assert sorted(fh) == sorted(data_a)
        for k, v in data_a.items():
            np.testing.assert_array_equal(fh[k][()], v)


def test_to_spec_round_trip_custom_components(tmp_path: Path) -> None:
    p = (
        Pipeline(CountingSource(6, per=3))
        .filter(DropOdd())
        .filter(Tally(name="tally"))
        .write(ListSink(str(tmp_path)))
    )
    spec = json.loads(json.dumps(p.to_spec(), default=str))
    assert spec["filters"][1] == {"class": f"{__name__}:Tally", "params": {"name": "tally"}}
    rebuilt = build(spec)
    assert [list(rebuilt[i]) for i in range(6)] == [list(p[i]) for i in range(6)]
    assert rebuilt.run_index(4) == [str(tmp_path / "4.json"), str(tmp_path / "4.meta")]

    no_sink = build(Pipeline(CountingSource(2)).to_spec())
    assert no_sink.sink is None and no_sink.filters == ()


def test_duplicate_stateful_filter_names_are_refused() -> None:
    check_unique_names([Tally(name="a"), Tally(name="b"), FieldStats()])
    with pytest.raises(ValueError, match="'a'"):
        check_unique_names([Tally(name="a"), FieldStats(), Tally(name="a")])

    dup = Pipeline(SyntheticSource(n=2)).filter(FieldStats()).filter(FieldStats(fields="u"))
    with pytest.raises(SpecError) as info:
        build(dup.to_spec())
    assert "fieldstats" in info.value.format()
    assert "\n" not in info.value.format()

    ok = Pipeline(SyntheticSource(n=2)).filter(FieldStats()).filter(FieldStats(name="other"))
    assert len(build(ok.to_spec()).stateful_filters) == 2


def test_component_base_is_importable_by_spec_reference() -> None:
    assert issubclass(Tally, Component)
    assert Tally.suffix == ".json" and FieldStats.suffix == ".h5"
