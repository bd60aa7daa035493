"""Write-behind publishing: a sink's outputs are fsynced and renamed while the next index runs.

Making one output durable costs an ``fsync`` of the file, a rename and an ``fsync`` of its
directory: about a millisecond on a local disk, several on Lustre or GPFS, where the directory
fsync is a round trip to the metadata server. Done inline, a rank's CPU idles through all of
it. Inside the rank loop a :class:`Publisher` is active:
:func:`hpc_curator.store.atomic.atomic_path`
with ``defer=True`` (the built-in sinks use it) only writes the temporary and queues it; one
background thread per process fsyncs each file and renames it into place, in order, and
fsyncs each directory *once per commit* (not once per file), which also cuts the metadata
load. ``fsync`` releases the GIL, so the next index computes meanwhile. Files written in place
(a Zarr chunk) are only fsynced there (:func:`hpc_curator.store.atomic.make_durable`).

The commit protocol is unchanged: before a rank writes a commit record it calls
:meth:`Publisher.drain`, which waits until every queued output is durable and returns those
that could not be kept (a full disk, an I/O error). A crash before the commit leaves the batch
uncommitted (re-run on resume) and at worst :data:`MAX_PENDING` ``.tmp-`` files per rank,
which no manifest names (they are not removed: an output directory may be shared); a reader
sees the old file or the complete new one, never a torn one.

The queue is bounded (:data:`MAX_PENDING`), so a sink that writes faster than the disk
syncs is slowed to the disk's pace instead of piling up temporaries.
"""

from __future__ import annotations

import os
import queue
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from hpc_curator.store import atomic

#: Outputs queued and not yet durable, per process; ``submit`` blocks beyond it. A few are
#: enough to ride out a slow fsync; each is a ``.tmp-`` file a killed rank leaves behind.
MAX_PENDING = 8


@dataclass(frozen=True)
class Unkept:
    """An output that could not be made durable, and the index (``tag``) that wrote it."""

    tag: int
    path: str
    type: str
    msg: str
    tb: str


class Publisher:
    """Finish deferred atomic outputs on one background thread, in submission order.

    Use as a context manager around a rank's loop: it becomes this thread's target for
    ``atomic_path(..., defer=True)`` and, on exit, finishes what is queued and stops its
    thread. The loop sets :attr:`tag` (its position in the current batch) before each index,
    so that :meth:`drain` can say which index an unkept output belongs to.
    """

    def __init__(self) -> None:
        #: set by the rank loop before each index; recorded with every submitted output
        self.tag = 0
        self._queue: queue.Queue[tuple[int, Path, Path] | threading.Event | None] = queue.Queue(
            MAX_PENDING
        )
        self._thread: threading.Thread | None = None
        self._unkept: list[Unkept] = []
        self._dirs: dict[Path, list[tuple[int, Path]]] = {}
        self._previous: atomic.Deferral | None = None
        self._pid = os.getpid()

    def __enter__(self) -> Publisher:
        self._previous = atomic.set_deferral(self)
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        atomic.set_deferral(self._previous)
        self.close()

    def submit(self, tmp: Path, final: Path) -> None:
        """Queue ``tmp`` to be fsynced and renamed to ``final`` (blocks while the queue is full).

        In a child that user code forked meanwhile (no thread of ours runs there), the output
        is finished at once instead.
        """
        if os.getpid() != self._pid:
            _complete(tmp, final)
            atomic.fsync_dir(final.parent)
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="hpc-curator-write-behind", daemon=True
            )
            self._thread.start()
        self._queue.put((self.tag, tmp, final))

    def sync(self, path: Path) -> None:
        """Queue ``path`` (a file written in place) to be fsynced with its directory."""
        self.submit(path, path)

    def drain(self) -> list[Unkept]:
        """Wait until every queued output is durable; return (and forget) those that are not."""
        if self._thread is not None:
            done = threading.Event()
            self._queue.put(done)
            done.wait()
        unkept, self._unkept = self._unkept, []
        return unkept

    def close(self) -> list[Unkept]:
        """Drain, stop the thread; return what could not be kept."""
        unkept = self.drain()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        return unkept

    # -- the background thread ---------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                self._sync_dirs()
                item.set()
                continue
            tag, tmp, final = item
            try:
                _complete(tmp, final)
            except BaseException as exc:  # reported to the rank loop by drain(), not lost
                if tmp != final:
                    atomic.remove(tmp)
                self._fail(tag, final, exc)
            else:
                self._dirs.setdefault(final.parent, []).append((tag, final))

    def _sync_dirs(self) -> None:
        for directory, outputs in self._dirs.items():
            try:
                atomic.fsync_dir(directory)
            except BaseException as exc:
                for tag, final in outputs:
                    self._fail(tag, final, exc)
        self._dirs.clear()

    def _fail(self, tag: int, final: Path, exc: BaseException) -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self._unkept.append(Unkept(tag, str(final), type(exc).__qualname__, str(exc), tb))


def _complete(tmp: Path, final: Path) -> None:
    """Fsync ``tmp`` and rename it to ``final``; only fsync a file written in place
    (``tmp == final``, :meth:`Publisher.sync`). Its directory is the caller's."""
    if tmp == final:
        atomic.fsync_file(final)
    else:
        atomic.finish(tmp, final)
