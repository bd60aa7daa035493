"""Poison pills and stuck indices: an index that kills its process is found and, at last, failed.

Each rank keeps the index it is running in a 16-byte memory-mapped file beside its journal
(``aNNNN-rankRRRRR-wTOKEN.current``): one store into shared memory per index, no system call,
and the page survives the process (the kernel owns it). When a rank dies -- a segfault in a C
library, ``os._exit``, the OOM killer, a watchdog -- the file still names the index it was
running.

At the beginning of every attempt, rank 0 reads those files for every rank that left no end
record: each is a *crash* of that index. When one rank dies, its launcher kills the others in
the middle of their indices too, so a crash only makes an index a *suspect*: the next attempt
runs the suspects first, one after the other, on rank 0 alone (the other ranks start on the
rest). A poison pill then kills rank 0 again on the same index, while an innocent bystander
either succeeds or is never reached. An index that crashed its rank ``max_index_crashes``
times (default 2) is recorded as failed by rank 0 of the next attempt, so the run completes
and ``failed``/``retry`` show it.

``--index-timeout`` bounds an index's wall time: past it, the index is failed with a
``IndexTimeout`` (SIGALRM interrupts Python code); an index stuck in C code that does not
return within a grace period ends its rank with SIGKILL, which then counts as a crash. Once an
index's contributions to the stateful filters are being accepted (or discarded), a timeout no
longer interrupts it (:mod:`hpc_curator.engine.contributions`): they are kept by all or by none.
"""

from __future__ import annotations

import mmap
import os
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from hpc_curator.engine.contributions import GATE
from hpc_curator.store.rundir import RunDir

IDLE = -1
#: An index stuck past ``--index-timeout`` (SIGALRM could not interrupt it) ends its rank
#: after another ``max(GRACE_SECONDS, timeout)`` seconds.
GRACE_SECONDS = 5.0


class IndexTimeout(Exception):
    """An index ran longer than ``--index-timeout``."""


#: Bytes of a current-index file: int64 [index, finished, failed, last finish (ms since epoch)]
CURRENT_BYTES = 32


class CurrentIndex:
    """The index a rank is running, in a memory-mapped file that outlives the process.

    The same page carries the rank's live counters (indices finished and failed in this
    attempt, committed or not, and when the last one finished): ``status`` and the live view
    read them between commits. Stores into a shared mapping cost no system call and nothing
    is fsynced; the kernel writes the page back on its own schedule, so the metadata load on a
    parallel filesystem does not grow with the index rate.
    """

    def __init__(self, path: Path) -> None:
        from hpc_curator.store.nofollow import NEW_FILE, ensure_dir

        ensure_dir(path.parent)
        # a new file, never a planted symlink's target (its name carries the writer token)
        fd = os.open(path, os.O_RDWR | NEW_FILE, 0o644)
        try:
            os.ftruncate(fd, CURRENT_BYTES)
            self._map = mmap.mmap(fd, CURRENT_BYTES)
        finally:
            os.close(fd)
        # a memoryview of int64: an item store is ~2x cheaper than into a numpy array
        self.slots = memoryview(self._map).cast("q")
        for k, value in enumerate((IDLE, 0, 0, 0)):
            self.slots[k] = value
        self._finished = self._failed = 0

    def set(self, index: int) -> None:
        """Mark ``index`` as running (``IDLE`` when between indices)."""
        self.slots[0] = index

    def finished(self, ok: int) -> None:
        """Count one finished index (``ok`` 0: it failed) and mark the rank idle."""
        slots = self.slots
        self._finished += 1
        slots[1] = self._finished
        if not ok:
            self._failed += 1
            slots[2] = self._failed
        slots[3] = time.time_ns() // 1_000_000
        slots[0] = IDLE

    def refail(self, n: int) -> None:
        """Count ``n`` indices counted as done as failed after all (their output was lost)."""
        self._failed += n
        self.slots[2] = self._failed

    def close(self) -> None:
        """Mark idle and unmap."""
        self.slots[0] = IDLE
        self.slots.release()
        del self.slots
        self._map.close()


def read_live(path: Path) -> tuple[int, int, int, float] | None:
    """``(index running or IDLE, finished, failed, last finish time)`` of a rank, or ``None``."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < CURRENT_BYTES:
        return None
    index, finished, failed, ms = np.frombuffer(data[:CURRENT_BYTES], dtype=np.int64).tolist()
    return index, finished, failed, ms / 1000.0


def read_current(path: Path) -> int:
    """The index a (dead) rank was running, or ``IDLE``."""
    try:
        data = path.read_bytes()
    except OSError:
        return IDLE
    return int(np.frombuffer(data[:8], dtype=np.int64)[0]) if len(data) >= 8 else IDLE


def crashes(rd: RunDir, ends: dict[tuple[int, int], Any], recorded: np.ndarray) -> dict[int, list]:
    """``{index: [(attempt, rank), ...]}``: ranks that died while running an unrecorded index."""
    found: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for path in rd.current_files():
        attempt, rank = rd.parse_journal_name(path.with_suffix(".jsonl"))
        if (attempt, rank) in ends:
            continue
        index = read_current(path)
        if index != IDLE:
            found[index].append((attempt, rank))
    if found and len(recorded):  # a few candidates against up to 10^8 recorded indices
        candidates = np.array(sorted(found), dtype=np.int64)
        for index in candidates[np.isin(candidates, recorded)].tolist():
            del found[index]
    return dict(found)


def crash_records(
    rd: RunDir, ends: dict[tuple[int, int], Any], recorded: np.ndarray, limit: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """Indices that crashed their rank ``limit`` times or more, as failure records, and the
    suspects: those that crashed it fewer times (run first, alone, by rank 0)."""
    out: list[dict[str, Any]] = []
    suspects: list[int] = []
    for index, where in sorted(crashes(rd, ends, recorded).items()):
        if limit < 1 or len(where) < limit:
            suspects.append(index)
            continue
        places = ", ".join(f"attempt {a} rank {r}" for a, r in where)
        out.append(
            {
                "index": index,
                "type": "RankCrash",
                "msg": (
                    f"index {index} killed its rank {len(where)} times ({places}): a signal, "
                    "os._exit or the OOM killer; recorded as failed (--max-index-crashes)"
                ),
                "tb": "",
            }
        )
    return out, suspects


class Watchdog:
    """``--index-timeout``: SIGALRM fails a slow index; a stuck one ends the rank."""

    def __init__(self, timeout: float | None, current: CurrentIndex) -> None:
        self.timeout = timeout
        self.current = current
        self.armed = False
        self._started = 0.0
        self._index = IDLE
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._alarm = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> Watchdog:
        if self.timeout:
            if self._alarm:
                self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
            self._thread = threading.Thread(target=self._watch, daemon=True, name="watchdog")
            self._thread.start()
        return self

    def _on_alarm(self, _signum: int, _frame: Any) -> None:
        if self._index == IDLE or not GATE.open:
            # too late: the index's outcome is being settled (its contributions to every
            # stateful filter accepted or discarded together) or it is over
            return
        raise IndexTimeout(f"index ran longer than --index-timeout {self.timeout:g} s")

    def start(self, index: int) -> None:
        """Before an index (only called when a timeout is set)."""
        self._index, self._started = index, time.monotonic()
        GATE.open = True
        if self._alarm and self.timeout:
            signal.setitimer(signal.ITIMER_REAL, self.timeout)

    def stop(self) -> None:
        """After an index."""
        self._index = IDLE
        if self._alarm and self.timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _watch(self) -> None:
        assert self.timeout
        limit = self.timeout + max(GRACE_SECONDS, self.timeout)
        while not self._done.wait(min(1.0, self.timeout / 4)):
            if self._index != IDLE and time.monotonic() - self._started > limit:
                # stuck where SIGALRM cannot reach it (C code): end the rank; the index stays
                # in the current-index file, so the next attempt counts it as a crash
                os.kill(os.getpid(), signal.SIGKILL)

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self.timeout and self._alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
