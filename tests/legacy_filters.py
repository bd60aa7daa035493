"""Stateful filters written the physicsnemo-curator way, and one with a directory state.

Loaded by file path (``tests/legacy_filters.py:legacy``) by the CLI, MPI ranks and pool
workers. Every filter records *which* indices reached its state (``seen``), so a test can
check that each successful index counts exactly once and no failed one counts at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpc_curator import LegacyStatefulFilter, Param, Pipeline, Source, StatefulFilter
from hpc_curator.components import FailOn, SyntheticSource
from hpc_curator.model.pipeline import Filter
from tests.pipelines import KillAt


class LegacyMeans(Filter):
    """The original's contract: accumulate, ``flush()`` to ``_output_path``, static merge.

    Shards are Parquet files with one row (count, total, seen indices).
    """

    def __init__(self, output_path: str) -> None:
        self._output_path = output_path
        self.count, self.total, self.seen = 0, 0.0, []

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self.count += int(item["u"].size)
            self.total += float(item["u"].sum())
            self.seen.append(int(item["index"]))
            yield item

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"count": [self.count], "total": [self.total], "seen": [self.seen]})
        pq.write_table(table, self._output_path)

    @staticmethod
    def merge(paths: Sequence[str], output: str) -> str:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [pq.read_table(p).to_pylist()[0] for p in paths]
        seen = sorted(i for r in rows for i in r["seen"])
        table = pa.table(
            {
                "count": [sum(r["count"] for r in rows)],
                "total": [sum(r["total"] for r in rows)],
                "seen": [seen],
            }
        )
        pq.write_table(table, output)
        return output


class LegacyZarrMoments(LegacyMeans):
    """The same, with Zarr-store (directory) shards, as the original's field statistics."""

    def flush(self) -> None:
        import zarr

        group = zarr.open_group(self._output_path, mode="w")
        group.attrs["count"] = self.count
        group.attrs["total"] = self.total
        group.create_array("seen", data=np.asarray(self.seen, dtype=np.int64), chunks=(8,))

    @staticmethod
    def merge(paths: Sequence[str], output: str) -> str:
        import zarr

        count, total, seen = 0, 0.0, []
        for p in paths:
            g = zarr.open_group(p, mode="r")
            count += int(g.attrs["count"])
            total += float(g.attrs["total"])
            seen.extend(int(i) for i in np.asarray(g["seen"][:]))
        out = zarr.open_group(output, mode="w")
        out.attrs["count"], out.attrs["total"] = count, total
        out.create_array("seen", data=np.asarray(sorted(seen), dtype=np.int64), chunks=(8,))
        return output


class LostFlush(LegacyMeans):
    """A legacy filter whose flush ignores ``_output_path``: must be an error, never silent."""

    def flush(self) -> None:
        Path(os.environ.get("TMPDIR", "/tmp"), f"lost-{os.getpid()}.json").write_text("{}")


class DirSeen(StatefulFilter[dict]):
    """A native stateful filter whose state is a directory (``.npy`` + ``.json`` files)."""

    suffix = ".store"

    @classmethod
    def empty_state(cls) -> dict:
        return {"count": 0, "total": 0.0, "seen": []}

    def observe(self, state: dict, item: Any) -> Any:
        state["count"] += int(item["u"].size)
        state["total"] += float(item["u"].sum())
        state["seen"].append(int(item["index"]))
        return item

    @classmethod
    def combine(cls, a: dict, b: dict) -> dict:
        return {k: a[k] + b[k] for k in ("count", "total", "seen")}

    @classmethod
    def write_state(cls, state: dict, path: str) -> None:
        os.makedirs(path)
        np.save(os.path.join(path, "seen.npy"), np.asarray(state["seen"], dtype=np.int64))
        Path(path, "sums.json").write_text(json.dumps([state["count"], state["total"]]))

    @classmethod
    def read_state(cls, path: str) -> dict:
        count, total = json.loads(Path(path, "sums.json").read_text())
        seen = np.load(os.path.join(path, "seen.npy")).tolist()
        return {"count": count, "total": total, "seen": seen}


def read_result(path: str) -> dict[str, Any]:
    """The merged output of any of the filters above, as ``{count, total, seen}``."""
    p = Path(path)
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(p).to_pylist()[0]
    if p.suffix == ".zarr":
        import zarr

        g = zarr.open_group(str(p), mode="r")
        seen = [int(i) for i in np.asarray(g["seen"][:])]
        return {"count": int(g.attrs["count"]), "total": float(g.attrs["total"]), "seen": seen}
    return DirSeen.read_state(str(p))


def legacy(
    n: str = "40", kind: str = "parquet", fail: str = "", at: str = "-1", out: str = ""
) -> Pipeline:
    """Synthetic -> FailOn -> KillAt -> a legacy (or directory-state) stateful filter."""
    p = Pipeline(SyntheticSource(n=int(n), shape="4x4", fields=("u",), seed=3))
    p = p.filter(FailOn(fail)).filter(KillAt(int(at)))
    base = out or "legacy"
    if kind == "parquet":
        return p.filter(LegacyStatefulFilter(LegacyMeans(f"{base}.parquet"), name="legacy"))
    if kind == "zarr":
        return p.filter(LegacyStatefulFilter(LegacyZarrMoments(f"{base}.zarr"), name="legacy"))
    if kind == "lost":
        return p.filter(LegacyStatefulFilter(LostFlush(f"{base}.parquet"), name="legacy"))
    return p.filter(DirSeen(name="dirseen"))


def unwrapped(n: str = "10") -> Pipeline:
    """The trap: a legacy stateful filter added as it is."""
    return Pipeline(SyntheticSource(n=int(n), shape="4x4")).filter(LegacyMeans("x.parquet"))


class Modes(Source):
    """A source whose parameters are declared the original's way (description, choices)."""

    params = (
        Param("n", "how many indices", type=int, default=4),
        Param("mode", "what to emit", choices=("zeros", "ones")),
    )

    def __init__(self, n: int = 4, mode: str = "zeros") -> None:
        self.n, self.mode = int(n), mode

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Iterator[Any]:
        fill = np.zeros if self.mode == "zeros" else np.ones
        yield {"index": index, "u": fill((2, 2))}
