"""The benchmark workloads W0, W1 and W2, in two forms that do the same per-index work.

- Pipeline factories (``w0``, ``w1``, ``w2``) for hpc-curator: ``hpc-curate run
  benchmarks/workloads.py:w1 -p n=1000 -p out=DIR`` or ``run_pipeline(w1(...))``.
  Parameters arrive as strings (``--param``).
- Plain per-index callables (:class:`W0Work`, :class:`W1Work`, :class:`W2Work`) for the
  contenders (raw mpi4py loop, joblib, dask.bag, mpi4py.futures, datatrove): they call the
  *same* source, transform and sink objects, without pipeline, journal, commit or manifest.
  ``W1Work`` returns the index's field moments so the contender can reduce them into the
  same statistics file FieldStats produces (that reduction is the contenders' "merge").

This module imports only numpy and hpc_curator, so it can be loaded by file path (as
``hpc-curate`` does for ``FILE.py:factory`` specs) as well as as ``benchmarks.workloads``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from hpc_curator import Pipeline
from hpc_curator.components import FieldStats, HDF5Sink, Smooth, SyntheticSource
from hpc_curator.components.stats import Moments
from hpc_curator.model.pipeline import Filter, Param, Sink, Source

#: W1 array shape and the smoothing passes that make the transform cost ~5 ms here.
W1_SHAPE = "64x64x16"
W1_PASSES = 4
#: W2 Pareto shape (alpha) and default mean cost per index.
W2_ALPHA = 1.5
W2_MEAN_MS = 4.0


# -- W0: no-op -----------------------------------------------------------------------------
class NoopSource(Source):
    """``n`` indices, each yielding one small dict (no work at all)."""

    params = (Param("n", int, Param.REQUIRED, "number of indices"),)

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Iterator[dict[str, Any]]:
        yield {"index": index}


class NullSink(Sink):
    """Consume the items and write nothing."""

    def __call__(self, items: Iterator[Any], index: int) -> list[str]:
        for _ in items:
            pass
        return []


def w0(n: str = "1000") -> Pipeline:
    """W0 no-op: NoopSource -> NullSink (pure framework overhead)."""
    return Pipeline(NoopSource(int(n))).write(NullSink())


class MarkFirst(Filter):
    """``os.stat(marker)`` once, at a process's first item: a syscall ``strace`` can find
    (P9 counts a rank's file-system operations from exec up to it)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.done = False

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        import os

        for item in items:
            if not self.done:
                self.done = True
                try:
                    os.stat(self.marker)
                except OSError:
                    pass
            yield item


def w0mark(n: str = "2", marker: str = "/hpc-curator-first-index") -> Pipeline:
    """W0 with :class:`MarkFirst`: NoopSource -> MarkFirst -> NullSink."""
    return Pipeline(NoopSource(int(n))).filter(MarkFirst(marker)).write(NullSink())


class W0Work:
    """Plain W0: the same source and sink, called directly."""

    def __init__(self, n: int) -> None:
        self.source = NoopSource(n)
        self.sink = NullSink()

    def __call__(self, index: int) -> list[str]:
        return self.sink(iter(self.source[index]), index)


# -- W1: CPU + I/O -------------------------------------------------------------------------
def w1(n: str = "1000", out: str = "", passes: str = str(W1_PASSES), seed: str = "0") -> Pipeline:
    """W1: SyntheticSource 64x64x16 float32 -> Smooth (~5 ms) -> FieldStats -> HDF5Sink."""
    return (
        Pipeline(SyntheticSource(n=int(n), shape=W1_SHAPE, seed=int(seed), fields=("u",)))
        .filter(Smooth("u", passes=int(passes)))
        .filter(FieldStats(fields="u", name="stats"))
        .write(HDF5Sink(out or "outputs/w1"))
    )


MomentsTuple = tuple[int, float, float, float, float]


class W1Work:
    """Plain W1: the same source, transform and sink; returns ``(paths, moments of u)``."""

    def __init__(self, n: int, out: str, passes: int = W1_PASSES, seed: int = 0) -> None:
        self.source = SyntheticSource(n=n, shape=W1_SHAPE, seed=seed, fields=("u",))
        self.smooth = Smooth("u", passes=passes)
        self.sink = HDF5Sink(out)

    def __call__(self, index: int) -> tuple[list[str], MomentsTuple]:
        items = list(self.smooth(self.source[index]))
        m = Moments()
        for item in items:
            m = m.combine(Moments.of(item["u"]))
        paths = self.sink(iter(items), index)
        return paths, (m.count, m.mean, m.m2, m.min, m.max)


def reduce_moments(parts: Any) -> Moments:
    """Combine moments tuples (or Moments) in any order (Chan's update, like FieldStats)."""
    total = Moments()
    for p in parts:
        total = total.combine(p if isinstance(p, Moments) else Moments(*p))
    return total


def write_stats(m: Moments, path: str) -> None:
    """Write reduced moments in FieldStats' own file format (the contenders' merged output)."""
    FieldStats.write_state({"u": m}, path)


# -- W2: heavy-tailed cost -----------------------------------------------------------------
def pareto_costs(n: int, seed: int = 0, mean_ms: float = W2_MEAN_MS, alpha: float = W2_ALPHA):
    """Seeded per-index costs in seconds: Pareto(alpha) scaled to mean ``mean_ms``."""
    rng = np.random.default_rng(seed)
    x = rng.pareto(alpha, n) + 1.0  # classical Pareto, x_m = 1, mean alpha/(alpha-1)
    return x * (mean_ms / 1000.0) / (alpha / (alpha - 1.0))


class ParetoSource(Source):
    """``n`` indices whose item carries a seeded heavy-tailed cost (seconds)."""

    params = (
        Param("n", int, Param.REQUIRED, "number of indices"),
        Param("seed", int, 0, "seed"),
        Param("mean_ms", float, W2_MEAN_MS, "mean cost per index (ms)"),
    )

    def __init__(self, n: int, seed: int = 0, mean_ms: float = W2_MEAN_MS) -> None:
        self.n = int(n)
        self.costs = pareto_costs(self.n, int(seed), float(mean_ms))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Iterator[dict[str, Any]]:
        yield {"index": index, "cost": float(self.costs[index])}


class Spend(Filter):
    """Spend each item's ``cost`` seconds: sleeping (default) or busy-looping."""

    params = (Param("busy", bool, False, "busy-loop instead of sleeping"),)

    def __init__(self, busy: bool = False) -> None:
        self.busy = bool(busy)

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            if self.busy:
                end = time.perf_counter() + item["cost"]
                while time.perf_counter() < end:
                    pass
            else:
                time.sleep(item["cost"])
            yield item


def w2(
    n: str = "2000", seed: str = "0", mean_ms: str = str(W2_MEAN_MS), busy: str = "0"
) -> Pipeline:
    """W2 heavy-tailed: ParetoSource -> Spend -> NullSink."""
    return (
        Pipeline(ParetoSource(int(n), int(seed), float(mean_ms)))
        .filter(Spend(busy=busy.strip().lower() in {"1", "true", "yes"}))
        .write(NullSink())
    )


class W2Work:
    """Plain W2: the same source, filter and sink."""

    def __init__(self, n: int, seed: int = 0, mean_ms: float = W2_MEAN_MS, busy: bool = False):
        self.source = ParetoSource(n, seed, mean_ms)
        self.spend = Spend(busy)
        self.sink = NullSink()

    def __call__(self, index: int) -> list[str]:
        return self.sink(self.spend(self.source[index]), index)
