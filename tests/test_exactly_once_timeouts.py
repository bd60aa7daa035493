"""``--index-timeout`` never leaks: an index's contributions to every stateful filter are
accepted together or not at all (issue 21).

Two stateful filters each record the indices they saw. The second one is slow, on the first
launch only, for some indices: in its ``combine`` (where an index's contribution is accepted
into the running state) or in its ``observe`` (while the index runs). Whatever the timeout
interrupted, ``run`` then ``retry`` must leave every index in both merged outputs exactly
once. Real processes, a real SIGALRM.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpc_curator import LegacyStatefulFilter, Pipeline, Source, StatefulFilter
from hpc_curator.engine.stages import StageRunner
from hpc_curator.model.pipeline import Filter
from tests.conftest import cli, manifest_rows

N = 5
SLOW = (1, 3)

USER = textwrap.dedent(
    """
    import json, os, time
    from pathlib import Path
    from hpc_curator import Pipeline, Source, StatefulFilter

    MARKS = Path(os.environ["HPC_TEST_MARKS"])
    SLOW = {int(i) for i in os.environ["HPC_TEST_SLOW"].split(",")}


    def slow_once(index, seconds=1.5):
        '''Sleep past the timeout the first time ``index`` passes (never again).'''
        mark = MARKS / str(index)
        if index in SLOW and not mark.exists():
            mark.write_text("")
            time.sleep(seconds)


    class Src(Source):
        def __init__(self, n: int = 5) -> None:
            self.n = int(n)

        def __len__(self):
            return self.n

        def __getitem__(self, index):
            yield {"index": index}


    class Seen(StatefulFilter):
        '''The indices seen, in a JSON list (counted with repetition).'''

        suffix = ".json"

        @classmethod
        def empty_state(cls):
            return []

        def observe(self, state, item):
            state.append(item["index"])
            return item

        @classmethod
        def combine(cls, a, b):
            return a + b

        @classmethod
        def write_state(cls, state, path):
            Path(path).write_text(json.dumps(sorted(state)))

        @classmethod
        def read_state(cls, path):
            return json.loads(Path(path).read_text())


    class SlowCombine(Seen):
        @classmethod
        def combine(cls, a, b):
            for index in b:
                slow_once(index)
            return a + b


    class SlowObserve(Seen):
        def observe(self, state, item):
            slow_once(item["index"])
            return super().observe(state, item)


    def build(n: str = "5", where: str = "combine") -> Pipeline:
        second = SlowCombine(name="second") if where == "combine" else SlowObserve(name="second")
        return Pipeline(Src(int(n))).filter(Seen(name="first")).filter(second)
    """
)


def merged(run_dir: Path, name: str) -> list[int]:
    """The indices in a filter's merged output, with repetition."""
    return list(json.loads((run_dir / "outputs" / f"{name}.json").read_text()))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("where", ["combine", "observe"])
def test_timeout_in_second_stateful_filter_counts_each_index_once(
    tmp_path: Path, where: str
) -> None:
    (tmp_path / "user.py").write_text(USER)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"HPC_TEST_MARKS": str(marks), "HPC_TEST_SLOW": ",".join(map(str, SLOW))}
    d = tmp_path / "run"
    first = cli(
        "run", "user.py:build", "-p", f"n={N}", "-p", f"where={where}",
        "--index-timeout", "0.5", "--commit-every", "1", "--run-dir", str(d), "-q",
        cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert first.returncode in (0, 1), first.stderr
    assert sorted(int(p.name) for p in marks.iterdir()) == list(SLOW)  # the timeouts fired
    failed = sorted(r["index"] for r in manifest_rows(d) if r["status"] != "ok")
    if where == "observe":  # interrupted while the index ran: failed, nothing accepted
        assert failed == list(SLOW), first.stderr
        assert all(
            r["error_type"] == "IndexTimeout" for r in manifest_rows(d) if r["status"] != "ok"
        )
    if failed:
        again = cli("retry", str(d), cwd=tmp_path, env=env, timeout=120)
        assert again.returncode == 0, again.stderr
    assert all(r["status"] == "ok" for r in manifest_rows(d))
    # every index exactly once in both filters' merged state
    assert merged(d, "first") == list(range(N))
    assert merged(d, "second") == list(range(N))


class _Src(Source):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Iterator[dict[str, int]]:
        yield {"index": index}


class _Seen(StatefulFilter[list[int]]):
    suffix = ".json"

    @classmethod
    def empty_state(cls) -> list[int]:
        return []

    def observe(self, state: list[int], item: Any) -> Any:
        state.append(item["index"])
        return item

    @classmethod
    def combine(cls, a: list[int], b: list[int]) -> list[int]:
        return a + b

    @classmethod
    def write_state(cls, state: list[int], path: str) -> None:
        Path(path).write_text(json.dumps(sorted(state)))

    @classmethod
    def read_state(cls, path: str) -> list[int]:
        return list(json.loads(Path(path).read_text()))


class _Broken(_Seen):
    @classmethod
    def combine(cls, a: list[int], b: list[int]) -> list[int]:
        if 2 in b:
            raise ValueError("cannot combine index 2")
        return a + b


@pytest.mark.parametrize("how", ["StageRunner", "run_index"])
def test_an_error_in_the_second_combine_leaves_the_first_filter_untouched(
    tmp_path: Path, how: str
) -> None:
    """In process: the same rule for an ordinary exception raised by a ``combine``."""
    first, second = _Seen(name="first"), _Broken(name="second")
    pipeline = Pipeline(_Src(4)).filter(first).filter(second)
    run = StageRunner(pipeline) if how == "StageRunner" else pipeline.run_index
    for index in range(4):
        if index == 2:
            with pytest.raises(ValueError) as err:
                run(index)
            if how == "StageRunner":  # the failed stage is the filter whose combine failed
                assert err.value.hpc_curator_stage == "2._Broken"  # type: ignore[attr-defined]
        else:
            run(index)
    for f in (first, second):
        f.flush(str(tmp_path / f"{f.name}.json"))
        assert json.loads((tmp_path / f"{f.name}.json").read_text()) == [0, 1, 3]


class _LegacySeen(Filter):
    """A physicsnemo-curator style stateful filter: the indices seen, flushed as JSON."""

    def __init__(self, output_path: str) -> None:
        self._output_path = output_path
        self.seen: list[int] = []

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self.seen.append(item["index"])
            yield item

    def flush(self) -> None:
        Path(self._output_path).write_text(json.dumps(self.seen))

    @staticmethod
    def merge(paths: list[str], output: str) -> None:
        seen = sorted(i for p in paths for i in json.loads(Path(p).read_text()))
        Path(output).write_text(json.dumps(seen))


def test_a_legacy_filter_forgets_an_index_left_unsettled(tmp_path: Path) -> None:
    """An exception that escapes between an index's end and its discard (a timeout firing
    right there) leaves it neither accepted nor discarded: it failed, and what the wrapped
    filter saw of it must not reach the next index's state or the next flush."""
    f = LegacyStatefulFilter(_LegacySeen(str(tmp_path / "seen.json")))
    for index in range(5):
        f.begin()
        for _ in f(iter([{"index": index}])):
            pass
        if index not in (2, 4):  # 2 and 4: unsettled (4 is the last before the flush)
            f.accept()
    out = tmp_path / "segment.json"
    f.flush(str(out))
    assert json.loads(out.read_text()) == [0, 1, 3]
