"""Pipelines used by the tests (loaded by file path: tests/pipelines.py:NAME)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

from hpc_curator import Filter, Pipeline, Sink
from hpc_curator.components import FailOn, FieldStats, HDF5Sink, Sleep, SyntheticSource


def stats(
    n: str = "60",
    shape: str = "8x8",
    fail: str = "",
    sleep: str = "0",
    out: str = "",
    seed: str = "0",
) -> Pipeline:
    """Synthetic -> [Sleep] -> FailOn -> FieldStats(stats) [-> HDF5Sink(out)]."""
    p = Pipeline(SyntheticSource(n=int(n), shape=shape, seed=int(seed), fields=("u", "v")))
    if float(sleep) > 0:
        p = p.filter(Sleep(float(sleep)))
    p = p.filter(FailOn(fail)).filter(FieldStats(name="stats"))
    if out:
        p = p.write(HDF5Sink(out))
    return p


class KillAt(Filter):
    """SIGKILL this very process when index ``at`` arrives (a hard crash mid-run)."""

    def __init__(self, at: int) -> None:
        self.at = int(at)

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            if item["index"] == self.at and not os.environ.get("HPC_TEST_NO_KILL"):
                os.kill(os.getpid(), signal.SIGKILL)
            yield item


def killer(n: str = "120", at: str = "50", sleep: str = "0") -> Pipeline:
    """Stats pipeline whose process dies at index ``at`` (unless HPC_TEST_NO_KILL is set)."""
    p = Pipeline(SyntheticSource(n=int(n), shape="8x8", fields=("u",)))
    if float(sleep) > 0:
        p = p.filter(Sleep(float(sleep)))
    return p.filter(KillAt(int(at))).filter(FieldStats(name="stats"))


class ThreadProbe(Filter):
    """Adds what the worker process sees: its BLAS thread variables and its thread count."""

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            status = open("/proc/self/status").read()
            threads = int(status.split("Threads:")[1].split()[0])
            env = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
            yield {**item, "probe": {"threads": threads, **env}}


class ProbeSink(Sink):
    """Writes each item's ``probe`` as ``<out>/<index>.json``; returns that path."""

    def __init__(self, out: str) -> None:
        self.out = out

    def __call__(self, items: Iterator[Any], index: int) -> list[str]:
        path = os.path.join(self.out, f"{index}.json")
        os.makedirs(self.out, exist_ok=True)
        with open(path, "w") as fh:
            json.dump([item["probe"] for item in items], fh)
        return [path]


class EnvProbe(Filter):
    """Adds what the rank sees: the named environment variables and its user namespace."""

    def __init__(self, names: str) -> None:
        self.names = names

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            env = {v: os.environ.get(v) for v in self.names.split(",") if v}
            with open("/proc/self/ns/user", "rb"):
                userns = os.readlink("/proc/self/ns/user")
            yield {**item, "probe": {"env": env, "userns": userns, "pid": os.getpid()}}


def envprobe(n: str = "8", out: str = "probe", names: str = "CH_RUNNING") -> Pipeline:
    """Synthetic -> EnvProbe -> FieldStats(stats) -> ProbeSink(out)."""
    return (
        Pipeline(SyntheticSource(n=int(n), shape="4x4", fields=("u",)))
        .filter(EnvProbe(names))
        .filter(FieldStats(name="stats"))
        .write(ProbeSink(out))
    )


class PairedSource(SyntheticSource):
    """A source that declares pairs ``(k, k + gap)`` must run together (e.g. one LMDB env)."""

    def __init__(self, n: int, gap: int = 0, **kwargs: Any) -> None:
        super().__init__(n=n, **kwargs)
        self.gap = int(gap)

    def partition_indices(self, indices: Any) -> list[list[int]] | None:
        if self.gap <= 0:
            return None
        have = set(indices)
        return [[i, i + self.gap] for i in indices if i + self.gap in have and i % 10 == 0]


def zarr_store(
    n: str = "45",
    chunk: str = "7",
    store: str = "store.zarr",
    at: str = "-1",
    sleep: str = "0",
    gap: str = "0",
) -> Pipeline:
    """[Paired]Synthetic -> [Sleep] -> KillAt -> FieldStats -> ZarrSink(store, chunk)."""
    from hpc_curator.components import ZarrSink

    p = Pipeline(PairedSource(int(n), gap=int(gap), shape="3x4", fields=("u", "v"), seed=5))
    if float(sleep) > 0:
        p = p.filter(Sleep(float(sleep)))
    p = p.filter(KillAt(int(at))).filter(FieldStats(name="stats"))
    return p.write(ZarrSink(store, chunk=int(chunk)))


class Chatty(Filter):
    """Prints, warns and logs for every item (per-rank log tests)."""

    def __init__(self, lines: int = 1) -> None:
        self.lines = int(lines)

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        import logging
        import sys
        import warnings

        for item in items:
            i = item["index"]
            for k in range(self.lines):
                print(f"hello from index {i} line {k}")
            print(f"to stderr from {i}", file=sys.stderr)
            warnings.warn(f"careful with {i}", stacklevel=1)
            logging.getLogger("user.code").warning("logged at %d", i)
            yield item


def chatty(n: str = "12", fail: str = "", lines: str = "1", sleep: str = "0") -> Pipeline:
    """Synthetic -> Chatty -> [Sleep] -> FailOn -> FieldStats."""
    p = Pipeline(SyntheticSource(n=int(n), shape="2x2", fields=("u",))).filter(Chatty(int(lines)))
    if float(sleep) > 0:
        p = p.filter(Sleep(float(sleep)))
    return p.filter(FailOn(fail)).filter(FieldStats(name="stats"))


class Allocate(Filter):
    """Allocates ``mib`` MiB (numpy) while each item passes (peak-memory tests)."""

    def __init__(self, mib: float) -> None:
        self.mib = float(mib)

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        import numpy as np

        for item in items:
            block = np.ones(int(self.mib * (1 << 20) / 8))
            block[0] = 2.0
            yield item
            del block


def alloc(n: str = "6", mib: str = "8") -> Pipeline:
    """Synthetic -> Allocate(mib) -> FieldStats."""
    p = Pipeline(SyntheticSource(n=int(n), shape="2x2", fields=("u",)))
    return p.filter(Allocate(float(mib))).filter(FieldStats(name="stats"))


class KillOnce(Filter):
    """SIGKILL the process at index ``at``, once per ``marker`` file (a crash not repeated)."""

    def __init__(self, at: int, marker: str) -> None:
        self.at, self.marker = int(at), marker

    def __call__(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            if item["index"] == self.at and not os.path.exists(self.marker):
                open(self.marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            yield item


def kill_once(
    n: str = "300", at: str = "100", marker: str = "killed", sleep: str = "0"
) -> Pipeline:
    """Synthetic -> [Sleep] -> KillOnce -> FieldStats."""
    p = Pipeline(SyntheticSource(n=int(n), shape="8x8", fields=("u",)))
    if float(sleep) > 0:
        p = p.filter(Sleep(float(sleep)))
    return p.filter(KillOnce(int(at), marker)).filter(FieldStats(name="stats"))


class StopInFlush(FieldStats):
    """FieldStats whose first flush in the whole run stops its process (SIGSTOP) right after
    writing the segment: between the claim check before a commit and the commit record, as
    a node that hangs at the worst moment. The pid goes to ``marker`` first."""

    def __init__(self, marker: str, name: str = "stats") -> None:
        super().__init__(name=name)
        self.marker = marker

    def flush(self, path: str) -> None:
        super().flush(path)
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGSTOP)


def stop_in_flush(n: str = "120", marker: str = "stopped", sleep: str = "0.005") -> Pipeline:
    """Synthetic -> Sleep -> StopInFlush (FieldStats named stats)."""
    p = Pipeline(SyntheticSource(n=int(n), shape="8x8", fields=("u",)))
    return p.filter(Sleep(float(sleep))).filter(StopInFlush(marker))


def plain_stats(n: str = "120", sleep: str = "0.005") -> Pipeline:
    """Synthetic(u) -> Sleep -> FieldStats: the reference of :func:`stop_in_flush`."""
    p = Pipeline(SyntheticSource(n=int(n), shape="8x8", fields=("u",)))
    return p.filter(Sleep(float(sleep))).filter(FieldStats(name="stats"))
